import { statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { createPrivate } from './data-dir.js';

/**
 * A file held in SQLite's exclusive locking mode for as long as this holds it: another
 * holder, in this process or another, fails to take it with SQLITE_BUSY. The operating
 * system lets go of it when the process ends, however it ends, so no lock is ever stale.
 */
export class FileLock {
  private constructor(
    private readonly db: Database.Database,
    readonly file: string,
    /** The device and inode locked. */
    private readonly locked: string,
  ) {}

  /**
   * Takes the lock on `file`, made empty and private first if missing; throws if it is held.
   * A lock is only as good as its file's name: one taken on a file that was removed meanwhile
   * (a start that failed removes the lock file of the data dir it made, then lets go) holds
   * nothing another server would try, so the name is checked to still be the file locked.
   */
  static take(file: string, opened?: () => void): FileLock {
    for (let attempt = 1; ; attempt++) {
      createPrivate(file);
      const before = identity(file);
      const db = new Database(file, { timeout: 0 });
      // For tests: what another process may do between the open and the lock.
      opened?.();
      try {
        db.pragma('locking_mode = EXCLUSIVE');
        // Nothing in it needs a journal file left beside it.
        db.pragma('journal_mode = MEMORY');
        // In exclusive locking mode the lock of the first write is held until close.
        db.pragma('user_version = 1');
      } catch (error) {
        db.close();
        throw error;
      }
      if (before !== undefined && identity(file) === before) return new FileLock(db, file, before);
      db.close();
      // Replaced between the look and the lock: a new file is tried, a few times at most.
      if (attempt === 3) {
        throw Object.assign(new Error(`${file} was replaced while it was being locked`), {
          code: 'SQLITE_BUSY',
        });
      }
    }
  }

  /** Whether `err`, thrown by take, says another holder has the lock. */
  static isHeld(err: unknown): boolean {
    return (err as { code?: unknown } | null)?.code === 'SQLITE_BUSY';
  }

  /**
   * Whether the file's name still gives the file locked: one removed or replaced since (a
   * stale-lock cleanup, a tmp cleaner, a restore from a backup) holds nothing another would try.
   */
  named(): boolean {
    return identity(this.file) === this.locked;
  }

  release(): void {
    if (this.db.open) this.db.close();
  }
}

/** The device and inode `file` names, or undefined if it names nothing. */
function identity(file: string): string | undefined {
  try {
    const { dev, ino } = statSync(file);
    return `${dev}:${ino}`;
  } catch {
    return undefined;
  }
}
