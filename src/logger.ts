import { fstatSync } from 'node:fs';
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
}

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
 * reader read again. A file or terminal keeps pino's destination.
 */
function stdout(): LogOut {
  let stream = false;
  try {
    const stat = fstatSync(1);
    stream = stat.isFIFO() || stat.isSocket();
  } catch {
    // No stdout to look at: pino's destination reports what goes wrong.
  }
  if (!stream) return pino.destination({ dest: 1, sync: false, maxLength: LOG_BUFFER_BYTES });
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
  const write = out.write.bind(out);
  out.write = (line: string) => write(render(line));
  return pino({ level, base: undefined }, out);
}
