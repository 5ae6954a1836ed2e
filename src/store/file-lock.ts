import Database from 'better-sqlite3';
import { createPrivate } from './data-dir.js';

/**
 * A file held in SQLite's exclusive locking mode for as long as this holds it: another
 * holder, in this process or another, fails to take it with SQLITE_BUSY. The operating
 * system lets go of it when the process ends, however it ends, so no lock is ever stale.
 */
export class FileLock {
  private constructor(private readonly db: Database.Database) {}

  /** Takes the lock on `file`, made empty and private first if missing; throws if it is held. */
  static take(file: string): FileLock {
    createPrivate(file);
    const db = new Database(file, { timeout: 0 });
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
    return new FileLock(db);
  }

  /** Whether `err`, thrown by take, says another holder has the lock. */
  static isHeld(err: unknown): boolean {
    return (err as { code?: unknown } | null)?.code === 'SQLITE_BUSY';
  }

  release(): void {
    if (this.db.open) this.db.close();
  }
}
