import fs, { fstatSync } from 'node:fs';
import net from 'node:net';
import { isatty } from 'node:tty';
import pino from 'pino';
import { prettyFactory } from 'pino-pretty';
import type { Logger } from './core/ports.js';
import { inertJson, visible } from './protocol/text.js';

export type LogFormat = 'pretty' | 'json';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * Every string of a parsed log record, keys included, made visible, so the
 * pretty printer prints one line per record whatever a field holds. Stack
 * traces keep their line breaks (each line is escaped on its own): the pretty
 * printer indents them, and they come from the server, not from clients.
 */
export function inertRecord(value: Json, key = ''): Json {
  if (typeof value === 'string') {
    return key === 'stack' ? value.split('\n').map(visible).join('\n') : visible(value);
  }
  if (Array.isArray(value)) return value.map((item) => inertRecord(item));
  if (value === null || typeof value !== 'object') return value;
  const out: { [key: string]: Json } = {};
  for (const [k, v] of Object.entries(value)) out[visible(k)] = inertRecord(v, k);
  return out;
}

/**
 * Log bytes held for stdout while its reader is not taking them; past it, new lines are
 * dropped. Written synchronously, a log pipe nobody read (a stalled shipper, a full
 * journald socket) stopped the event loop once it was full: 143 clients joining and leaving
 * wedged the server. Written asynchronously without a cap, every client's lines piled up in
 * memory as long as the reader stalled.
 */
export const LOG_BUFFER_BYTES = 4 * 1024 * 1024;

/** Where log lines go. */
interface LogOut {
  write(line: string): void;
  /** Told, once lines are written again, how many were lost and why (a full disk). */
  lost?: (lines: number, code: string) => void;
}

/**
 * stdout when it is a file or a terminal: written in the background, one write at a time,
 * holding at most LOG_BUFFER_BYTES. pino's destination, used before, emitted a failed write
 * (ENOSPC: the log's disk full) as an error nobody listened for, so the process began to
 * exit, and then retried the write without end as it exited: the server answered nothing
 * and only SIGKILL stopped it. Here a failed write costs its lines, never the server; they
 * are counted and said once a write succeeds again.
 */
class FileOut implements LogOut {
  lost?: (lines: number, code: string) => void;
  private held: string[] = [];
  private heldBytes = 0;
  private writing = false;
  private failed: { lines: number; code: string } | undefined;
  private idle: (() => void) | undefined;

  constructor(private readonly fd: number) {
    // What a process.exit leaves held gets one try, not a retry loop.
    process.once('exit', () => this.flushOnce());
  }

  write(line: string): void {
    const bytes = Buffer.byteLength(line);
    if (this.heldBytes + bytes > LOG_BUFFER_BYTES) {
      this.lose(1, 'held');
      return;
    }
    this.held.push(line);
    this.heldBytes += bytes;
    if (!this.writing) this.next();
  }

  /** Resolves once everything held is written (or lost), or after `ms`. */
  settle(ms: number): Promise<void> {
    if (!this.writing) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.idle = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private next(): void {
    if (this.held.length === 0) {
      this.writing = false;
      this.idle?.();
      this.idle = undefined;
      return;
    }
    this.writing = true;
    const lines = this.held.length;
    let chunk = Buffer.from(this.held.join(''));
    this.held = [];
    this.heldBytes = 0;
    const written = (err: NodeJS.ErrnoException | null, n: number) => {
      if (err !== null) {
        this.lose(lines, err.code ?? 'error');
      } else if (n < chunk.length) {
        chunk = chunk.subarray(n);
        fs.write(this.fd, chunk, written);
        return;
      } else if (this.failed !== undefined) {
        const { lines: lost, code } = this.failed;
        this.failed = undefined;
        this.lost?.(lost, code);
      }
      this.next();
    };
    fs.write(this.fd, chunk, written);
  }

  private lose(lines: number, code: string): void {
    this.failed ??= { lines: 0, code };
    this.failed.lines += lines;
  }

  private flushOnce(): void {
    if (this.held.length === 0) return;
    try {
      fs.writeSync(this.fd, this.held.join(''));
    } catch {
      // The disk is full or gone: these lines go, the exit does not wait for it.
    }
    this.held = [];
  }
}

/** stdout as a file or terminal, for `closeLogs`. */
let file: FileOut | undefined;

/**
 * The open stdout, so that a stop can let its held lines go for a while and then drop them
 * (`closeLogs`).
 */
let open: net.Socket | undefined;

/**
 * stdout, written without blocking the event loop, and never holding more than the cap.
 * A pipe or socket (a log shipper, journald) is written as a non-blocking stream: written
 * through pino's asynchronous destination instead, a reader that stopped left a thread of
 * libuv's pool blocked in write(2), and the process could not exit after a stop until the
 * reader read again. A file or terminal gets FileOut.
 */
function stdout(): LogOut {
  let stream = false;
  try {
    const stat = fstatSync(1);
    stream = stat.isFIFO() || stat.isSocket();
  } catch {
    // No stdout to look at: FileOut's writes fail, and cost only their lines.
  }
  if (!stream) {
    // One for the process: it holds stdout's lines, and its exit hook is registered once.
    file ??= new FileOut(1);
    return file;
  }
  const socket = new net.Socket({ fd: 1, readable: false, writable: true });
  // A reader that went away (EPIPE) costs the log, never the server.
  socket.on('error', () => {});
  open = socket;
  return {
    write(line: string): void {
      if (!socket.destroyed && socket.writableLength < LOG_BUFFER_BYTES) socket.write(line);
    },
  };
}

/**
 * Lets the log lines still held go out for up to `ms`, then drops them: a pending write to
 * a pipe nobody reads would otherwise keep the process from exiting.
 */
export function closeLogs(ms: number): Promise<void> {
  if (file !== undefined) return file.settle(ms);
  const socket = open;
  if (socket === undefined || socket.destroyed) return Promise.resolve();
  open = undefined;
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve();
    };
    const timer = setTimeout(done, ms);
    if (socket.writableLength === 0) done();
    else socket.once('drain', done);
  });
}

/**
 * Binds pino for the process; the core only sees the Logger interface.
 * Whatever a record holds, neither format writes a raw control character
 * (docs/security.md, "Terminal and log injection").
 */
export function createLogger(level: string, format: LogFormat): Logger & pino.Logger {
  if (format === 'json') return logTo(level, inertJson);
  const prettify = prettyFactory({
    colorize: isatty(1) && !process.env.NO_COLOR,
    ignore: 'pid,hostname',
    translateTime: 'SYS:HH:MM:ss.l',
    singleLine: true,
  });
  // Escaping happens before prettifying, so the printer's own colors stay.
  return logTo(level, (line) => prettify(inertRecord(JSON.parse(line) as Json)));
}

/** pino at `level`, each line it makes passed through `render` on its way to stdout. */
function logTo(level: string, render: (line: string) => string): pino.Logger {
  const out = stdout();
  const logger = pino(
    { level, base: undefined },
    { write: (line: string) => out.write(render(line)) },
  );
  out.lost = (lines, code) =>
    logger.warn({ lines, code }, 'log lines lost: stdout could not take them');
  return logger;
}
