import { closeSync, mkdirSync, openSync, statSync } from 'node:fs';
import path from 'node:path';

function codeOf(err: unknown): unknown {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/**
 * Creates `dir` and its missing parents, as `mkdirSync(dir, { recursive: true })` would.
 * Node's own loops for ever, holding the event loop, where `mkdir` answers ENOENT under a
 * directory that exists (a `--data-dir` inside /proc or /sys): this tries each directory at
 * most twice, so such a path fails with that error.
 */
export function makeDirectory(dir: string): void {
  const full = path.resolve(dir);
  try {
    mkdirSync(full);
    return;
  } catch (err) {
    if (codeOf(err) === 'EEXIST' && statSync(full).isDirectory()) return;
    const parent = path.dirname(full);
    if (codeOf(err) !== 'ENOENT' || parent === full) throw err;
    makeDirectory(parent);
  }
  try {
    mkdirSync(full);
  } catch (err) {
    // Made meanwhile by someone else: as good as made here.
    if (codeOf(err) === 'EEXIST' && statSync(full).isDirectory()) return;
    throw err;
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
