import pino from 'pino';
import { prettyFactory } from 'pino-pretty';
import type { Logger } from './core/ports.js';
import { visible } from './protocol/text.js';

export type LogFormat = 'pretty' | 'json';

/**
 * Raw characters a JSON line may carry inside strings that a terminal or a
 * log viewer could still obey (JSON.stringify escapes only C0): DEL, C1,
 * bidi controls and the line separators.
 */
const JSON_UNSAFE = /[\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** The same JSON line with those characters written as \uXXXX escapes: same value, inert bytes. */
export function inertJsonLine(line: string): string {
  return line.replace(JSON_UNSAFE, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

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

/** stdout, written without blocking the event loop, and never holding more than the cap. */
function stdout(): ReturnType<typeof pino.destination> {
  return pino.destination({ dest: 1, sync: false, maxLength: LOG_BUFFER_BYTES });
}

/**
 * Binds pino for the process; the core only sees the Logger interface.
 * Whatever a record holds, neither format writes a raw control character
 * (docs/security.md, "Terminal and log injection").
 */
export function createLogger(level: string, format: LogFormat): Logger & pino.Logger {
  if (format === 'json') {
    const out = stdout();
    const write = out.write.bind(out);
    out.write = (line: string) => write(inertJsonLine(line));
    return pino({ level, base: undefined }, out);
  }
  const prettify = prettyFactory({
    colorize: process.stdout.isTTY === true && !process.env.NO_COLOR,
    ignore: 'pid,hostname',
    translateTime: 'SYS:HH:MM:ss.l',
    singleLine: true,
  });
  const out = stdout();
  const write = out.write.bind(out);
  // Escaping happens before prettifying, so the printer's own colors stay.
  out.write = (line: string) => write(prettify(inertRecord(JSON.parse(line) as Json)));
  return pino({ level, base: undefined }, out);
}
