import { randomUUID } from 'node:crypto';
import { readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import type Database from 'better-sqlite3';

/** How often, at most, a store that commits renews its mark (Marks). */
const MARK_MS = 1_000;
/** A mark file is some 90 bytes: anything much larger is not one. */
const MARK_FILE_MAX = 4096;

/**
 * The mark of a database's state: a random name written into the database (meta `mark`) and,
 * beside it, into `<file>-mark`, renewed when the store opens, at most once a second while it
 * commits, and when it closes. A file restored from a backup holds a mark older than the
 * one beside it (or none): it lacks messages written since, whose ids it would give out
 * again. A crash leaves the two as the last renewal did, a second or less before it.
 * A renewal writes `next` beside the database first, then the database, then `mark`, so a
 * renewal cut off anywhere leaves the database with one of the two (never a false alarm).
 * The file is replaced whole (a rename), so it is never read half written.
 */
export class Marks {
  private current: string | undefined;
  private due = 0;

  constructor(
    private readonly db: Database.Database,
    private readonly file: string,
  ) {}

  /**
   * Whether the database is the one this file last named, or nothing says otherwise: no
   * file (a first run, an earlier version), or one that is not a small regular file of a
   * mark (a FIFO there would block the start; garbage is read as none, never as an alarm).
   */
  matches(): boolean {
    let beside: unknown;
    try {
      const stat = statSync(this.file);
      if (!stat.isFile() || stat.size > MARK_FILE_MAX) return true;
      beside = JSON.parse(readFileSync(this.file, 'utf8'));
    } catch {
      return true;
    }
    if (typeof beside !== 'object' || beside === null) return true;
    const { mark: here, next } = beside as { mark?: unknown; next?: unknown };
    if (typeof here !== 'string') return true;
    const mark = this.db.prepare("SELECT value FROM meta WHERE key = 'mark'").pluck().get();
    // The next renewal names the database's own as `mark` beside its next: cut off before it
    // writes the database, the two still agree (also when the database held `next`).
    this.current = typeof mark === 'string' ? mark : undefined;
    return mark === here || (typeof next === 'string' && mark === next);
  }

  /** Renews the mark if a second has passed since the last renewal (or `now`). */
  renew(now = false): void {
    const at = performance.now();
    if (!now && at < this.due) return;
    this.due = at + MARK_MS;
    const next = randomUUID();
    try {
      this.write({ mark: this.current, next });
      this.db
        .prepare(
          "INSERT INTO meta (key, value) VALUES ('mark', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .run(next);
      // The database's now, whether or not the write below gets through: the next renewal
      // must name it beside its own next.
      this.current = next;
      this.write({ mark: next });
    } catch {
      // A disk that refuses the writes: the next renewal tries again.
    }
  }

  private write(marks: { mark?: string; next?: string }): void {
    const temp = `${this.file}.tmp`;
    writeFileSync(temp, JSON.stringify(marks));
    renameSync(temp, this.file);
  }
}
