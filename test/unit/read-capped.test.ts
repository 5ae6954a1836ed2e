import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readCapped, readCappedSync, readError } from '../../src/read-capped.js';
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

describe('readCapped', () => {
  it('reads as readCappedSync does', async () => {
    const file = path.join(temp.path, 'f');
    writeFileSync(file, Buffer.alloc(200_000, 'x'));
    expect((await readCapped(file, 200_000)).length).toBe(200_000);
    await expect(readCapped(file, 199_999)).rejects.toMatchObject({ code: 'EFBIG' });
    await expect(readCapped('/dev/zero', 1024 * 1024)).rejects.toThrow('more than 1 MiB');
    await expect(readCapped(path.join(temp.path, 'none'), 10)).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });

  it('waits for a FIFO without holding the event loop', async () => {
    // A running server reads these on SIGHUP: a FIFO nobody writes to yet must not stop it.
    const fifo = path.join(temp.path, 'fifo');
    execFileSync('mkfifo', [fifo]);
    // Writes only after a second: a read that held the event loop would have returned by the
    // time anything else ran, not before.
    const writer = spawn('sh', ['-c', 'sleep 1; printf "a b" > "$1"', 'sh', fifo], {
      stdio: 'ignore',
    });
    const reading = readCapped(fifo, 100);
    const first = await Promise.race([
      reading.then(() => 'read'),
      new Promise<string>((resolve) => setImmediate(() => resolve('event loop'))),
    ]);
    expect(first).toBe('event loop');
    expect((await reading).toString()).toBe('a b');
    if (writer.exitCode === null) await once(writer, 'exit');
  });
});
