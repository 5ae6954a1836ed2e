import { realpathSync } from 'node:fs';
import path from 'node:path';
import { makeDirectory, unmakeDataDir } from './data-dir.js';
import { FileLock } from './file-lock.js';

/** How often a running server checks that confab.lock still names the file it holds. */
const CHECK_MS = 2_000;

/** What a check found: the lock as it was, made again after its file went, or another's. */
export type DataDirHold = 'held' | 'taken again' | 'lost';

/**
 * One server's hold on its --data-dir: each server rewrites bans.json whole from its own
 * list, so two on one dir drop each other's bans. The lock is a file (FileLock); a file
 * removed or replaced while the server runs let a second server start, so the hold is
 * checked every few seconds and before each write, and a file gone is locked again.
 */
export class DataDirLock {
  private timer: ReturnType<typeof setInterval> | undefined;
  private lost = false;

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
   * Whether this server still holds the dir. Its lock file removed or replaced, it locks
   * the file there now (made again if missing), unless another server holds that one.
   */
  check(): DataDirHold {
    if (this.lock.named()) return 'held';
    try {
      makeDirectory(this.dir);
      const again = FileLock.take(this.lock.file);
      this.lock.release();
      this.lock = again;
      this.lost = false;
      return 'taken again';
    } catch {
      this.lost = true;
      return 'lost';
    }
  }

  /** Checks every few seconds, telling `changed` when the hold changes. */
  watch(changed: (hold: Exclude<DataDirHold, 'held'>) => void): void {
    this.timer = setInterval(() => {
      const wasLost = this.lost;
      const hold = this.check();
      if (hold === 'taken again' || (hold === 'lost' && !wasLost)) changed(hold);
    }, CHECK_MS);
    this.timer.unref();
  }

  /** Throws unless this server holds the dir: before a write another server's would undo. */
  ensure(): void {
    if (this.check() === 'lost') {
      throw new Error('another server holds this data dir now');
    }
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
