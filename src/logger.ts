import pino from 'pino';
import pretty from 'pino-pretty';
import type { Logger } from './core/ports.js';

export type LogFormat = 'pretty' | 'json';

/** Binds pino for the process; the core only sees the Logger interface. */
export function createLogger(level: string, format: LogFormat): Logger & pino.Logger {
  if (format === 'json') return pino({ level, base: undefined });
  const stream = pretty({
    sync: true,
    colorize: process.stdout.isTTY === true && !process.env.NO_COLOR,
    ignore: 'pid,hostname',
    translateTime: 'SYS:HH:MM:ss.l',
    singleLine: true,
  });
  return pino({ level, base: undefined }, stream);
}
