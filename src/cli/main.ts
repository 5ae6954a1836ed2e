#!/usr/bin/env node
import { parseArgs } from 'node:util';
import {
  type Config,
  ConfigError,
  type ConfigFile,
  envName,
  loadConfig,
  optionsHelp,
  parseArgsOptions,
} from '../config.js';
import { printConfig, readConfigFile } from '../config-file.js';
import { closeLogs, createLogger, type LogFormat } from '../logger.js';
import { hashPassword, MAX_PASSWORD_LENGTH } from '../password.js';
import { CONFAB_VERSION as VERSION } from '../protocol/version.js';
import { isRegularFile } from '../read-capped.js';
import { ConfabServer, type ReloadResult, StartError } from '../server.js';
import { chat } from './chat.js';

/**
 * How long a stopping server lets its last log lines go out to a reader that is slow to take
 * them; then they are dropped, and the process exits.
 */
const LOG_CLOSE_MS = 1_000;

const USAGE = `confab ${VERSION} — a small, fast, self-hosted chat server

Usage:
  confab serve [options]                      start the server
  confab chat <nickname> [--host H] [--port P] [--tls [--ca FILE]]
                                              join a server from the terminal
  confab hash-password                        read a password, print its hash for "operators"
  confab --help | --version

Run "confab serve --help" or "confab chat --help" for their options.`;

function serveUsage(): string {
  return `Usage: confab serve [options]

Starts the chat server. Every option can also be set with its environment
variable or as a key of the --config file; a flag wins over the variable,
which wins over the file. SIGHUP re-reads the file and applies what can
change without a restart; SIGINT and SIGTERM stop the server.

Options:
${optionsHelp()}
  --print-config               print the effective configuration as a config file, and exit
  --help                       show this help`;
}

/**
 * What a mistyped flag is told: the error on one line, the nearest option if one is close
 * (`--prot`: `--port`), and where the options are, not the whole help, which pushed the
 * error out of sight.
 */
function serveError(message: string, names: readonly string[]): string {
  const typed = /Unknown option '--([^'=]*)/.exec(message)?.[1];
  const near = typed === undefined ? undefined : nearest(typed, names);
  const hint = near === undefined ? '' : ` Did you mean --${near}?`;
  return `confab serve: ${message.split('. ')[0]!.replace(/\.$/, '')}.${hint}\nRun "confab serve --help" for the options.\n`;
}

/** The name within two edits of `typed` (one for names of four letters or less), the closest. */
function nearest(typed: string, names: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = typed.length <= 4 ? 2 : 3;
  for (const name of names) {
    const d = editDistance(typed, name, bestDistance);
    if (d < bestDistance) {
      best = name;
      bestDistance = d;
    }
  }
  return best;
}

/** Edit distance with transpositions (`prot`, `port`: one), or `cap` once it is sure to reach it. */
function editDistance(a: string, b: string, cap: number): number {
  if (Math.abs(a.length - b.length) >= cap) return cap;
  let before: number[] = [];
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      let d = Math.min(
        previous[j]! + 1,
        row[j - 1]! + 1,
        previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d = Math.min(d, before[j - 2]! + 1);
      }
      row[j] = d;
    }
    if (Math.min(...row) >= cap && Math.min(...previous) >= cap) return cap;
    before = previous;
    previous = row;
  }
  return Math.min(previous[b.length]!, cap);
}

type Flags = Record<string, string | boolean | undefined>;

/**
 * Flags > CONFAB_* variables > the config file > defaults. The file as read at start, or on
 * reload as a running server reads it (regular files only): one that is not regular, such
 * as `--config <(…)`, cannot be read again, and a reload keeps what was read from it then.
 */
class ConfigSource {
  private kept: ConfigFile | undefined;

  constructor(
    private readonly flags: Flags,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  atStart(): Config {
    const file = this.file();
    if (file === undefined) return loadConfig(this.flags, this.env, undefined);
    const read = readConfigFile(file);
    if (!isRegularFile(file)) this.kept = read;
    return loadConfig(this.flags, this.env, read);
  }

  reloaded(): Config {
    const file = this.file();
    if (file === undefined) return loadConfig(this.flags, this.env, undefined);
    const read =
      this.kept !== undefined && !isRegularFile(file) ? this.kept : readConfigFile(file, true);
    return loadConfig(this.flags, this.env, read);
  }

  /** The config file read, if any (--config or CONFAB_CONFIG). */
  file(): string | undefined {
    const file =
      typeof this.flags.config === 'string' ? this.flags.config : this.env[envName('config')];
    return file ? file : undefined;
  }
}

function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
}

async function serve(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseArgs>;
  const options = {
    ...parseArgsOptions(),
    'print-config': { type: 'boolean' },
    help: { type: 'boolean' },
  } as const;
  try {
    parsed = parseArgs({
      args,
      options,
      allowPositionals: false,
      // --no-hide-addresses: a switch's flag can undo what the file or variable turned on.
      allowNegative: true,
      strict: true,
    });
  } catch (err) {
    // The server's switches have a "no" form too (--no-hide-addresses).
    const switches = Object.entries(parseArgsOptions()).filter(([, o]) => o.type === 'boolean');
    const names = [...Object.keys(options), ...switches.map(([name]) => `no-${name}`)];
    process.stderr.write(serveError((err as Error).message, names));
    return 2;
  }
  const { help, 'print-config': print, ...flags } = parsed.values as Flags;
  // Only the server's switches have a "no" form; "--no-help" is as unknown as "--nohelp".
  if (help === false || print === false) {
    const name = help === false ? 'help' : 'print-config';
    process.stderr.write(serveError(`Unknown option '--no-${name}'`, []));
    return 2;
  }
  if (help) {
    process.stdout.write(`${serveUsage()}\n`);
    return 0;
  }
  // A reload sees the environment the server started with, as systemd's ExecReload does.
  const env = { ...process.env };
  const source = new ConfigSource(flags, env);
  let config: Config;
  try {
    config = source.atStart();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`confab serve: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (print) {
    process.stdout.write(printConfig(config));
    return 0;
  }
  const log = createLogger(config.logLevel, config.logFormat as LogFormat);
  // Signals are handled from the start, so one that arrives while the server
  // is still starting takes effect as soon as it is up.
  let stopRequested: string | undefined;
  let reloadRequested = false;
  let stopWhileStarting: (signal: string) => void = () => {};
  let onSignal: (signal: string) => void = (signal) => {
    if (signal === 'SIGHUP') reloadRequested = true;
    else {
      stopRequested = signal;
      stopWhileStarting(signal);
    }
  };
  const handler = (signal: NodeJS.Signals) => onSignal(signal);
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const s of signals) process.on(s, handler);
  const release = () => {
    for (const s of signals) process.off(s, handler);
  };
  // A start can wait for ever: a FIFO named as banned words or TLS material is read until
  // something writes to it. A stop signal gives it --shutdown-timeout to finish, then ends the
  // process: nobody is served yet, and the pending read would keep it alive.
  // A start that waits by design (a cluster node waiting for the shard agreement) stops
  // waiting at once.
  const starting = new AbortController();
  const startGivenUp = new Promise<string>((resolve) => {
    stopWhileStarting = (signal) => {
      starting.abort();
      setTimeout(() => resolve(signal), config.shutdownTimeout * 1000).unref();
    };
  });
  let server: ConfabServer;
  try {
    const started = await Promise.race([
      ConfabServer.start(config, log, starting.signal),
      startGivenUp,
    ]);
    if (typeof started === 'string') {
      log.error({ signal: started }, 'stopped: the server had not finished starting');
      await closeLogs(LOG_CLOSE_MS);
      process.exit(1);
    }
    server = started;
    // What an operator checks first after a start or an upgrade: which build, reading what.
    log.info(
      {
        version: VERSION,
        config: source.file() ?? null,
        dataDir: config.dataDir,
        history: config.history,
        operators: config.operators.length,
        rooms: config.rooms.length,
        bans: server.chat.bans.list(Date.now()).length,
      },
      `confab ${VERSION} started`,
    );
  } catch (err) {
    release();
    process.stderr.write(
      err instanceof StartError
        ? `confab: ${err.message}\n`
        : `confab: cannot start: ${oneLine(err)}\n`,
    );
    await closeLogs(LOG_CLOSE_MS);
    // Nothing is served, but what the start opened may still hold timers: a Redis client
    // that never connected keeps one for 2 s after it is told to disconnect.
    process.exit(1);
  }
  const reload = async () => {
    let next: Config;
    let result: ReloadResult;
    try {
      next = source.reloaded();
      result = await server.reload(next);
    } catch (err) {
      server.reloadFailed();
      log.error({}, `reload failed, keeping the running configuration: ${oneLine(err)}`);
      return;
    }
    log.level = next.logLevel;
    const { applied, needRestart } = result;
    log.info(
      { applied },
      applied.length === 0
        ? 'configuration reloaded; files re-read, no option changed'
        : `configuration reloaded; now in effect: ${applied.join(', ')}`,
    );
    for (const warning of result.warnings) log.warn({}, warning);
    if (needRestart.length > 0) {
      log.warn(
        { needRestart },
        `restart needed to change ${needRestart.join(', ')} (the old values stay in effect)`,
      );
    }
  };
  // Reloads run one at a time, in the order the signals came.
  let reloading = Promise.resolve();
  let stopping = false;
  const stopped = new Promise<number>((resolve) => {
    const shutDown = (code: number) => {
      stopping = true;
      server.stop().then(
        () => {
          log.info({}, 'Bye bye~');
          resolve(code);
        },
        (err: unknown) => {
          log.error({ err }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    onSignal = (signal) => {
      if (signal === 'SIGHUP') {
        if (!stopping) reloading = reloading.then(reload);
        return;
      }
      if (stopping) return;
      log.info({ signal }, 'shutting down');
      shutDown(0);
    };
    // A supervisor that starts it again gets the refusal at start, in one line.
    void server.refused.then((reason) => {
      if (stopping) return;
      log.error({}, `shutting down: ${reason}`);
      shutDown(1);
    });
  });
  if (reloadRequested) onSignal('SIGHUP');
  if (stopRequested !== undefined) onSignal(stopRequested);
  const code = await stopped;
  release();
  await closeLogs(LOG_CLOSE_MS);
  return code;
}

/** The first line of stdin: typed without echo on a terminal, or piped. */
function readPassword(stdin: NodeJS.ReadStream, stderr: NodeJS.WriteStream): Promise<string> {
  return new Promise((resolve, reject) => {
    const tty = stdin.isTTY === true;
    if (tty) {
      stderr.write('Password: ');
      stdin.setRawMode(true);
    }
    let text = '';
    const done = (error?: Error) => {
      stdin.off('data', onData);
      stdin.off('end', onEnd);
      if (tty) {
        stdin.setRawMode(false);
        stderr.write('\n');
      }
      stdin.pause();
      if (error) reject(error);
      else resolve(text);
    };
    const onData = (chunk: Buffer) => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\n' || ch === '\r') return done();
        // Ctrl+C or Ctrl+D at a raw terminal.
        if (tty && (ch === '\u0003' || ch === '\u0004')) return done(new Error('cancelled'));
        if (tty && (ch === '\u007f' || ch === '\b')) text = [...text].slice(0, -1).join('');
        else text += ch;
      }
    };
    const onEnd = () => done();
    stdin.on('data', onData);
    stdin.on('end', onEnd);
    stdin.resume();
  });
}

async function hashPasswordCommand(args: string[]): Promise<number> {
  if (args.length > 0) {
    process.stderr.write(
      args[0] === '--help'
        ? 'Usage: confab hash-password < password\nReads one line (without echo on a terminal) and prints its scrypt hash for the config file\'s "operators".\n'
        : 'confab hash-password: takes no arguments; the password comes from stdin\n',
    );
    return args[0] === '--help' ? 0 : 2;
  }
  let password: string;
  try {
    password = await readPassword(process.stdin, process.stderr);
  } catch {
    return 130;
  }
  if (password === '') {
    process.stderr.write('confab hash-password: the password is empty\n');
    return 2;
  }
  if (password.length > MAX_PASSWORD_LENGTH) {
    process.stderr.write(
      `confab hash-password: the password is longer than ${MAX_PASSWORD_LENGTH} characters\n`,
    );
    return 2;
  }
  process.stdout.write(`${hashPassword(password)}\n`);
  return 0;
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
    case 'hash-password':
      return hashPasswordCommand(rest);
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
