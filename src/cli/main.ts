#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, optionsHelp, parseArgsOptions } from '../config.js';
import { createLogger, type LogFormat } from '../logger.js';
import { ConfabServer } from '../server.js';
import { CONFAB_VERSION as VERSION } from '../version.js';
import { chat } from './chat.js';

const USAGE = `confab ${VERSION} — a small, fast, self-hosted chat server

Usage:
  confab serve [options]                     start the server
  confab chat <nickname> [--host H] [--port P]  join a server from the terminal
  confab --help | --version

Run "confab serve --help" or "confab chat --help" for their options.`;

function serveUsage(): string {
  return `Usage: confab serve [options]

Starts the chat server. Every option can also be set with its environment
variable; a flag wins over the variable.

Options:
${optionsHelp()}
  --help                         show this help`;
}

async function serve(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args,
      options: { ...parseArgsOptions(), help: { type: 'boolean' } },
      allowPositionals: false,
      strict: true,
    });
  } catch (err) {
    process.stderr.write(`confab serve: ${(err as Error).message}\n\n${serveUsage()}\n`);
    return 2;
  }
  if (parsed.values.help) {
    process.stdout.write(`${serveUsage()}\n`);
    return 0;
  }
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(parsed.values as Record<string, string | boolean | undefined>, process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`confab serve: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const log = createLogger(config.logLevel, config.logFormat as LogFormat);
  // Signals are handled from the start, so one that arrives while the server
  // is still starting stops it as soon as it is up.
  let stopRequested: string | undefined;
  let onSignal: (signal: string) => void = (signal) => {
    stopRequested = signal;
  };
  const handler = (signal: NodeJS.Signals) => onSignal(signal);
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  let server: ConfabServer;
  try {
    server = await ConfabServer.start(config, log);
  } catch (err) {
    log.error({ err }, `cannot start: ${(err as Error).message}`);
    return 1;
  }
  const stopped = new Promise<number>((resolve) => {
    onSignal = (signal) => {
      onSignal = () => {};
      log.info({ signal }, 'shutting down');
      server.stop().then(
        () => {
          log.info({}, 'Bye bye~');
          resolve(0);
        },
        (err: unknown) => {
          log.error({ err }, 'shutdown failed');
          resolve(1);
        },
      );
    };
  });
  if (stopRequested !== undefined) onSignal(stopRequested);
  const code = await stopped;
  process.off('SIGINT', handler);
  process.off('SIGTERM', handler);
  return code;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'chat':
      return chat(rest, {
        stdin: process.stdin,
        stdout: process.stdout,
        stderr: process.stderr,
        env: process.env,
      });
    case '--version':
    case '-v':
      process.stdout.write(`${VERSION}\n`);
      return 0;
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(`${USAGE}\n`);
      return 0;
    default:
      process.stderr.write(`confab: unknown command "${command}"\n\n${USAGE}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`confab: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
