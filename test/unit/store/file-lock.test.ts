import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileLock } from '../../../src/store/file-lock.js';
import { heldByAnother } from '../../helpers/lock-held.js';
import { useTempDir } from '../../helpers/temp-dir.js';

const temp = useTempDir('confab-lock-');

describe('FileLock', () => {
  it('refuses a second holder until the first lets go', () => {
    const file = path.join(temp.path, 'a.lock');
    const first = FileLock.take(file);
    expect(heldByAnother(file)).toBe(true);
    first.release();
    FileLock.take(file).release();
  });

  it('holds the file its name gives, not one removed between its open and its lock', () => {
    const file = path.join(temp.path, 'b.lock');
    const failing = FileLock.take(file);
    let once = true;
    // A start that failed removes its lock file and lets go just after this one opened it.
    const taken = FileLock.take(file, () => {
      if (!once) return;
      once = false;
      rmSync(file);
      failing.release();
    });
    expect(existsSync(file)).toBe(true);
    // A third start finds the lock held.
    expect(heldByAnother(file)).toBe(true);
    taken.release();
  });
});
