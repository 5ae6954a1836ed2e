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

/** The next chunk to read into: one byte past the cap at most, enough to see it is passed. */
function nextChunk(total: number, maxBytes: number): Buffer {
  return Buffer.allocUnsafe(Math.min(CHUNK, maxBytes + 1 - total));
}

/** What an error from `readCappedSync` says in brackets after the file's name. */
export function readError(err: unknown): string {
  const { code, message } = err as NodeJS.ErrnoException;
  return code === 'EFBIG' ? message : (code ?? message);
}

export function readCappedSync(file: string, maxBytes: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = nextChunk(total, maxBytes);
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) return Buffer.concat(chunks, total);
      chunks.push(chunk.subarray(0, n));
      total += n;
      if (total > maxBytes) throw tooLarge(maxBytes);
    }
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
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = nextChunk(total, maxBytes);
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) return Buffer.concat(chunks, total);
      chunks.push(chunk.subarray(0, bytesRead));
      total += bytesRead;
      if (total > maxBytes) throw tooLarge(maxBytes);
    }
  } finally {
    await handle.close();
  }
}
