import { closeSync, mkdirSync, openSync, rmdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';

function codeOf(err: unknown): unknown {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/**
 * Creates `dir` and its missing parents, as `mkdirSync(dir, { recursive: true })` would.
 * Node's own loops for ever, holding the event loop, where `mkdir` answers ENOENT under a
 * directory that exists (a `--data-dir` inside /proc or /sys): this tries each directory at
 * most twice, so such a path fails with that error. Returns the directories it made,
 * outermost first.
 */
export function makeDirectory(dir: string): string[] {
  const full = path.resolve(dir);
  const made: string[] = [];
  try {
    mkdirSync(full);
    return [full];
  } catch (err) {
    if (codeOf(err) === 'EEXIST' && statSync(full).isDirectory()) return made;
    const parent = path.dirname(full);
    if (codeOf(err) !== 'ENOENT' || parent === full) throw err;
    made.push(...makeDirectory(parent));
  }
  try {
    mkdirSync(full);
    made.push(full);
  } catch (err) {
    // Made meanwhile by someone else: as good as made here, and not ours to remove.
    if (codeOf(err) === 'EEXIST' && statSync(full).isDirectory()) return made;
    throw err;
  }
  return made;
}

/**
 * What a start writes in its --data-dir, the lock file last. Not bans.json, which only a
 * BAN writes: one there was put there by someone else.
 */
const DATA_FILES = [
  'history.db',
  'history.db-wal',
  'history.db-shm',
  'history.db-lock',
  'history.db-mark',
  'history.db-mark.tmp',
  'confab.lock',
];

/**
 * Undoes a --data-dir that a start which then failed had made (`made`, from
 * makeDirectory), so a mistyped port leaves nothing behind. Called holding the dir's lock
 * (`release` lets it go): every file removed is one this start wrote, since no other server
 * could write there without the lock, and a server that takes the lock once its file is gone
 * writes a new one, which keeps the directory. Directories are removed only empty, the
 * deepest first, each one this start made: a parent another server made a directory in
 * meanwhile stays. A data dir that was there before is left as it is.
 */
export function unmakeDataDir(dir: string, made: readonly string[], release: () => void): void {
  const full = path.resolve(dir);
  if (!made.includes(full)) {
    release();
    return;
  }
  try {
    for (const name of DATA_FILES) rmSync(path.join(full, name), { force: true });
  } catch {
    // Left as it is: the start's own error is the one to tell.
  }
  release();
  for (const directory of [...made].reverse()) {
    try {
      rmdirSync(directory);
    } catch {
      return;
    }
  }
}

/**
 * Creates `file`, empty, readable by its owner only, unless it exists (its mode is then left as
 * an operator set it). Chats and marks are nobody else's to read (bans.json is made so too):
 * a server started by hand, outside the unit's UMask, made them readable by every user.
 */
export function createPrivate(file: string): void {
  try {
    closeSync(openSync(file, 'wx', 0o600));
  } catch (err) {
    if (codeOf(err) !== 'EEXIST') throw err;
  }
}
