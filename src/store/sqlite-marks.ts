import { randomUUID } from 'node:crypto';
import {
  closeSync,
  openSync,
  readSync,
  renameSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import type Database from 'better-sqlite3';

/** How often, at most, a store that commits renews its mark (Marks). */
const MARK_MS = 1_000;
/** A mark line is some 90 bytes: a first line much longer is not one. */
const MARK_LINE_MAX = 4096;
/** The end of the file read for its last commit line (one is a few hundred bytes at most). */
const TAIL_BYTES = 16_384;
/**
 * Bytes of commit lines a file takes before they stop (a renewal, once a second, starts a
 * new file): some 60 bytes a commit, far more than a second of commits. Past it a file whose
 * renewals keep failing stops growing, and its last line names an older commit.
 */
const MARK_FILE_MAX = 4 << 20;

/** The highest id a commit gave out, in one of its rooms. */
export type Commit = readonly [room: string, id: number];

/**
 * The mark of a database's state: a random name written into the database (meta `mark`) and,
 * beside it, into `<file>-mark`, renewed when the store opens, at most once a second while it
 * commits, and when it closes. A file restored from a backup holds a mark older than the
 * one beside it (or none): it lacks messages written since, whose ids it would give out
 * again. Each commit also adds a line to the file naming the highest id it gave out in one
 * of its rooms, before any of its ids is acknowledged, and a renewal carries the last line
 * into the file it writes: a database with the file's mark whose room is below that id is
 * a backup taken within the second before the last commits (a crash leaves the database
 * with every commit, so its room holds the id).
 * A renewal writes `next` beside the database first, then the database, then `mark`, so a
 * renewal cut off anywhere leaves the database with one of the two (never a false alarm).
 * The mark line is replaced whole (a rename), so it is never read half written.
 */
export class Marks {
  private current: string | undefined;
  private due = 0;
  /** The file opened for commit lines, once one was written to it. */
  private fd: number | undefined;
  /** Bytes of commit lines in the file (MARK_FILE_MAX). */
  private appended = 0;
  /** The last commit's line, carried into each file a renewal writes. */
  private lastLine = '';

  constructor(
    private readonly db: Database.Database,
    private readonly file: string,
  ) {}

  /**
   * Whether the database is the one this file last named, or nothing says otherwise: no
   * file (a first run, an earlier version), or one that is not a regular file of a mark (a
   * FIFO there would block the start; garbage is read as none, never as an alarm).
   * `topOf` reads a room's highest id given out, as the database holds it.
   */
  matches(topOf: (room: string) => number): boolean {
    let head: string;
    let tail: string;
    try {
      const stat = statSync(this.file);
      if (!stat.isFile()) return true;
      const fd = openSync(this.file, 'r');
      try {
        head = readAt(fd, 0, Math.min(stat.size, MARK_LINE_MAX + 1));
        tail = readAt(fd, Math.max(0, stat.size - TAIL_BYTES), Math.min(stat.size, TAIL_BYTES));
      } finally {
        closeSync(fd);
      }
    } catch {
      return true;
    }
    const end = head.indexOf('\n');
    const first = end === -1 ? head : head.slice(0, end);
    if (first.length > MARK_LINE_MAX) return true;
    let beside: unknown;
    try {
      beside = JSON.parse(first);
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
    if (mark !== here && !(typeof next === 'string' && mark === next)) return false;
    const last = end === -1 ? undefined : lastCommit(tail);
    return last === undefined || topOf(last[0]) >= last[1];
  }

  /**
   * After a commit, before its ids are acknowledged: adds its line (`last`: none if it gave
   * out no id), then renews the mark if a second has passed since the last renewal.
   */
  committed(last: Commit | undefined): void {
    if (last !== undefined) {
      this.lastLine = `${JSON.stringify(last)}\n`;
      if (this.appended <= MARK_FILE_MAX) {
        try {
          this.fd ??= openSync(this.file, 'a', 0o600);
          this.appended += writeSync(this.fd, this.lastLine);
        } catch {
          // Not written: the file names an earlier commit, as it did before commit lines.
        }
      }
    }
    this.renew();
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

  /** Lets the file go: after the store's last renewal, which may have failed to replace it. */
  close(): void {
    if (this.fd !== undefined) {
      try {
        closeSync(this.fd);
      } catch {}
    }
    this.fd = undefined;
  }

  /** Replaces the file: its mark line and the last commit's line, to which the next are added. */
  private write(marks: { mark?: string; next?: string }): void {
    const temp = `${this.file}.tmp`;
    writeFileSync(temp, `${JSON.stringify(marks)}\n${this.lastLine}`, { mode: 0o600 });
    renameSync(temp, this.file);
    // Lines go to the new file from now; until it is in place they go on to the old one.
    this.close();
    this.appended = this.lastLine.length;
  }
}

function readAt(fd: number, position: number, length: number): string {
  const buffer = Buffer.alloc(length);
  const read = readSync(fd, buffer, 0, length, position);
  return buffer.toString('utf8', 0, read);
}

/** The last well-formed commit line (one cut off by a power cut is passed over). */
function lastCommit(lines: string): Commit | undefined {
  let end = lines.length;
  while (end > 0) {
    const start = lines.lastIndexOf('\n', end - 1) + 1;
    try {
      const line: unknown = JSON.parse(lines.slice(start, end));
      if (
        Array.isArray(line) &&
        line.length === 2 &&
        typeof line[0] === 'string' &&
        Number.isSafeInteger(line[1])
      ) {
        return [line[0], line[1] as number];
      }
    } catch {}
    end = start - 1;
  }
  return undefined;
}
