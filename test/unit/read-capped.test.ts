import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readCappedSync, readError } from '../../src/read-capped.js';
import { useTempDir } from '../helpers/temp-dir.js';

const temp = useTempDir('confab-read-');

describe('readCappedSync', () => {
  it('reads a file up to the cap whole, across chunks, and refuses one byte more', () => {
    const cap = 200_000;
    const bytes = Buffer.alloc(cap + 1, 'x');
    bytes.write('start', 0);
    bytes.write('end', cap - 3);
    const file = path.join(temp.path, 'f');
    writeFileSync(file, bytes.subarray(0, cap));
    expect(readCappedSync(file, cap).equals(bytes.subarray(0, cap))).toBe(true);
    writeFileSync(file, bytes);
    expect(() => readCappedSync(file, cap)).toThrow(expect.objectContaining({ code: 'EFBIG' }));
    writeFileSync(file, '');
    expect(readCappedSync(file, cap).length).toBe(0);
  });

  it('stops at the cap on a device that never ends', () => {
    let err: unknown;
    try {
      readCappedSync('/dev/zero', 1024 * 1024);
    } catch (e) {
      err = e;
    }
    expect(readError(err)).toBe('more than 1 MiB');
    let missing: unknown;
    try {
      readCappedSync(path.join(temp.path, 'none'), 10);
    } catch (e) {
      missing = e;
    }
    expect(readError(missing)).toBe('ENOENT');
  });
});
