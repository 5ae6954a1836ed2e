import { closeSync, mkdirSync, openSync, statSync } from 'node:fs';
import path from 'node:path';

function codeOf(err: unknown): unknown {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/**
 * Creates `dir` and its missing parents, as `mkdirSync(dir, { recursive: true })` would, and
 * returns the topmost directory it made (none: `dir` was there). Node's own loops for ever,
 * holding the event loop, where `mkdir` answers ENOENT under a directory that exists (a
 * `--data-dir` inside /proc or /sys): this tries each directory at most twice, so such a
 * path fails with that error.
 */
export function makeDirectory(dir: string): string | undefined {
  const full = path.resolve(dir);
  let made: string | undefined;
  try {
    mkdirSync(full);
    return full;
  } catch (err) {
    if (codeOf(err) === 'EEXIST' && statSync(full).isDirectory()) return undefined;
    const parent = path.dirname(full);
    if (codeOf(err) !== 'ENOENT' || parent === full) throw err;
    made = makeDirectory(parent);
  }
  try {
    mkdirSync(full);
  } catch (err) {
    // Made meanwhile by someone else: as good as made here, but not this one's to remove.
    if (codeOf(err) === 'EEXIST' && statSync(full).isDirectory()) return undefined;
    throw err;
  }
  return made ?? full;
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
