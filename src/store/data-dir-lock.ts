import { realpathSync } from 'node:fs';
import path from 'node:path';
import { makeDirectory, unmakeDataDir } from './data-dir.js';
import { FileLock } from './file-lock.js';

/** How often a running server checks that confab.lock still names the file it holds. */
const CHECK_MS = 2_000;

/** A change in a server's hold on its data dir, found by a check. */
export type DataDirChange =
  /** Its lock file was removed or replaced, and is locked again; `shared`: see DataDirLock. */
  | { kind: 'taken again'; shared: boolean }
  /** Another server holds the lock file there now: two servers run on the dir. */
  | { kind: 'shared' }
  /** The lock file there cannot be locked (a directory or a FIFO in its place, say). */
  | { kind: 'failed'; error: Error };

/**
 * One server's hold on its --data-dir: each server rewrites bans.json whole from its own
 * list, so two on one dir drop each other's bans. The lock is a file (FileLock); a file
 * removed or replaced while the server runs let a second server start, so the hold is
 * checked every few seconds and before each write, and a file gone is locked again. Once
 * another server has held the dir, this one writes no bans.json until it restarts.
 */
export class DataDirLock {
  private timer: ReturnType<typeof setInterval> | undefined;
  private changed: ((change: DataDirChange) => void) | undefined;
  /**
   * Another server held the dir while this one ran: its bans.json may hold bans this one
   * never read, which a write from this one's list would drop, until this one restarts.
   */
  private shared = false;
  /** Why the lock file cannot be locked again, while it cannot. */
  private failure: Error | undefined;

  private constructor(
    /** The directory itself, links resolved at start: a link repointed later moves nothing. */
    readonly dir: string,
    private readonly given: string,
    private lock: FileLock,
    private readonly made: readonly string[],
  ) {}

  /** Makes `dir` if missing and locks it; throws FileLock's error if another server holds it. */
  static take(dir: string): DataDirLock {
    const made: string[] = [];
    // A start that failed at the same moment may remove the directory it made under this
    // one's feet (see unmakeDataDir): then it is made again, a few times at most.
    for (let attempt = 1; ; attempt++) {
      made.push(...makeDirectory(dir));
      try {
        const real = realpathSync(dir);
        return new DataDirLock(real, dir, FileLock.take(path.join(real, 'confab.lock')), made);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt === 3) throw err;
      }
    }
  }

  /**
   * Looks that this server still holds the dir. Its lock file removed or replaced, it locks
   * the file there now (made again if missing), unless another server holds that one.
   */
  check(): void {
    if (this.lock.named()) return;
    try {
      makeDirectory(this.dir);
      const again = FileLock.take(this.lock.file);
      this.lock.release();
      this.lock = again;
      this.failure = undefined;
      this.changed?.({ kind: 'taken again', shared: this.shared });
    } catch (err) {
      if (FileLock.isHeld(err)) {
        if (!this.shared) this.changed?.({ kind: 'shared' });
        this.shared = true;
        return;
      }
      const error = err instanceof Error ? err : new Error(String(err));
      if (this.failure === undefined) this.changed?.({ kind: 'failed', error });
      this.failure = error;
    }
  }

  /** Checks every few seconds from now on; `changed` hears of every change a check finds. */
  watch(changed: (change: DataDirChange) => void): void {
    this.changed = changed;
    this.timer = setInterval(() => this.check(), CHECK_MS);
    this.timer.unref();
  }

  /**
   * Throws unless this server may write bans.json: it holds the dir, and no other server
   * held it meanwhile.
   */
  ensure(): void {
    this.check();
    if (this.shared) throw new Error('another server used this data dir meanwhile');
    if (this.failure !== undefined) throw this.failure;
  }

  release(): void {
    clearInterval(this.timer);
    this.lock.release();
  }

  /** Lets it go after a start that failed, removing the data dir if this start made it. */
  giveUp(): void {
    clearInterval(this.timer);
    unmakeDataDir(this.given, this.made, () => this.lock.release());
  }
}
