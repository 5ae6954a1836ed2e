/**
 * Reading the files an operator names (the config file, banned words, TLS material) with a
 * cap: `readFile` reads until the end, so a path such as /dev/zero or /dev/urandom took
 * gigabytes of memory (and, read synchronously on SIGHUP, held the event loop) before
 * failing. Past the cap the read stops and fails with code EFBIG. The config file is read
 * synchronously, as it always was; the others are read by a running server on SIGHUP too, so
 * they are read asynchronously (see readCapped).
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';

const CHUNK = 64 * 1024;

/** Its message is meant to follow the file's name: "(more than 1 MiB)". */
function tooLarge(maxBytes: number): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`more than ${maxBytes / (1024 * 1024)} MiB`);
  err.code = 'EFBIG';
  return err;
}

/**
 * The loop both reads share: yields the buffer to read into next (at most one byte past the
 * cap, enough to see it is passed), is given how many bytes were read, and returns the whole
 * file once a read gives none.
 */
function* capped(maxBytes: number): Generator<Buffer, Buffer, number> {
  const chunks: Buffer[] = [];
  let total = 0;
  for (;;) {
    const chunk = Buffer.allocUnsafe(Math.min(CHUNK, maxBytes + 1 - total));
    const n = yield chunk;
    if (n === 0) return Buffer.concat(chunks, total);
    chunks.push(chunk.subarray(0, n));
    total += n;
    if (total > maxBytes) throw tooLarge(maxBytes);
  }
}

/** What an error from `readCappedSync` says in brackets after the file's name. */
export function readError(err: unknown): string {
  const { code, message } = err as NodeJS.ErrnoException;
  return code === 'EFBIG' ? message : (code ?? message);
}

export function readCappedSync(file: string, maxBytes: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const loop = capped(maxBytes);
    let step = loop.next();
    while (!step.done) step = loop.next(readSync(fd, step.value, 0, step.value.length, null));
    return step.value;
  } finally {
    closeSync(fd);
  }
}

/**
 * As readCappedSync, without holding the event loop: a FIFO or a terminal named as banned
 * words or TLS material blocks on open or read until something writes, and read synchronously
 * on SIGHUP that stopped a running server from serving anyone meanwhile.
 */
export async function readCapped(file: string, maxBytes: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const loop = capped(maxBytes);
    let step = loop.next();
    while (!step.done) {
      const { bytesRead } = await handle.read(step.value, 0, step.value.length, null);
      step = loop.next(bytesRead);
    }
    return step.value;
  } finally {
    await handle.close();
  }
}
