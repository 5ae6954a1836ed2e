/**
 * Reading the files an operator names (the config file, banned words, TLS material) with a
 * cap: `readFile` reads until the end, so a path such as /dev/zero or /dev/urandom took
 * gigabytes of memory (and, read synchronously on SIGHUP, held the event loop) before
 * failing. Past the cap the read stops and fails with code EFBIG. The config file is read
 * synchronously, as it always was; the others are read by a running server on SIGHUP too, so
 * they are read asynchronously (see readCapped).
 *
 * A running server re-reads regular files only (`regularOnly`): a FIFO or a terminal blocks
 * until something writes to it, which for the config file held the event loop and for the
 * others every later reload. Opened without blocking and checked before any read, such a
 * path fails at once. At start a pipe (`--tls-key <(…)`) or a terminal is read as it comes.
 */
import {
  closeSync,
  constants,
  open as fsOpen,
  read as fsRead,
  fstat,
  fstatSync,
  openSync,
  readSync,
  type Stats,
  statSync,
} from 'node:fs';
import { Socket } from 'node:net';
import { isatty, ReadStream } from 'node:tty';
import { promisify } from 'node:util';

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

function notRegular(): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(
    'not a regular file; a pipe or device is read only at start',
  );
  err.code = 'EFTYPE';
  return err;
}

/** How a file is opened: without blocking when only a regular file will do (see above). */
function openFlags(regularOnly: boolean): number {
  return regularOnly ? constants.O_RDONLY | constants.O_NONBLOCK : constants.O_RDONLY;
}

/**
 * Whether `file` names a regular file, or cannot be looked at (its read then says why):
 * what is not one is read at start only, and a reload keeps what was read then.
 */
export function isRegularFile(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return true;
  }
}

/** What an error from `readCappedSync` says in brackets after the file's name. */
export function readError(err: unknown): string {
  const { code, message } = err as NodeJS.ErrnoException;
  return code === 'EFBIG' || code === 'EFTYPE' ? message : (code ?? message);
}

export function readCappedSync(file: string, maxBytes: number, regularOnly = false): Buffer {
  const fd = openSync(file, openFlags(regularOnly));
  try {
    if (regularOnly && !fstatSync(fd).isFile()) throw notRegular();
    const loop = capped(maxBytes);
    let step = loop.next();
    while (!step.done) step = loop.next(readSync(fd, step.value, 0, step.value.length, null));
    return step.value;
  } finally {
    closeSync(fd);
  }
}

/**
 * As readCappedSync, without holding the event loop, nor a thread of libuv's pool: a FIFO
 * or a terminal named as banned words or TLS material blocks until something writes to it,
 * and a thread blocked in open(2) or read(2) kept the process from exiting, even on SIGTERM
 * (Node waits for its pool at exit). So the file is opened without blocking, and a pipe or
 * a terminal is read as a socket is: its reader waits in the event loop for a writer and its
 * bytes, and goes with the process.
 */
export async function readCapped(
  file: string,
  maxBytes: number,
  regularOnly = false,
): Promise<Buffer> {
  const fd = await openFile(file, constants.O_RDONLY | constants.O_NONBLOCK);
  let stats: Stats;
  try {
    stats = await statFd(fd);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  if (stats.isFIFO() || stats.isSocket()) {
    if (regularOnly) {
      closeSync(fd);
      throw notRegular();
    }
    return readStream(fd, maxBytes, () => new Socket({ fd, readable: true, writable: false }));
  }
  // A terminal opened without blocking answers EAGAIN until a line is typed: at start it is
  // read as a stream too, to its end of file (Ctrl-D), as it was before it was opened so.
  if (!regularOnly && stats.isCharacterDevice() && isatty(fd)) {
    return readStream(fd, maxBytes, () => new ReadStream(fd));
  }
  try {
    if (regularOnly && !stats.isFile()) throw notRegular();
    const loop = capped(maxBytes);
    let step = loop.next();
    while (!step.done) step = loop.next(await readFd(fd, step.value));
    return step.value;
  } finally {
    closeSync(fd);
  }
}

const openFile = promisify(
  (path: string, flags: number, done: (err: Error | null, fd: number) => void) =>
    fsOpen(path, flags, done),
);
const statFd = promisify(fstat);

function readFd(fd: number, into: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    fsRead(fd, into, 0, into.length, null, (err, bytesRead) =>
      err ? reject(err) : resolve(bytesRead),
    );
  });
}

/**
 * Reads a FIFO, socket or terminal to its end through the event loop; the stream `open`
 * makes owns `fd` (closed here if it cannot be made).
 */
function readStream(fd: number, maxBytes: number, open: () => Socket): Promise<Buffer> {
  let pipe: Socket;
  try {
    pipe = open();
  } catch (err) {
    closeSync(fd);
    return Promise.reject(err);
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    pipe.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (total > maxBytes) {
        pipe.destroy();
        reject(tooLarge(maxBytes));
        return;
      }
      chunks.push(chunk);
    });
    pipe.once('end', () => {
      pipe.destroy();
      resolve(Buffer.concat(chunks, total));
    });
    pipe.once('error', (err) => {
      pipe.destroy();
      reject(err);
    });
  });
}
