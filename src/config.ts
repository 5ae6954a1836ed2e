/**
 * Server options: one table drives the command-line flags, the CONFAB_*
 * environment variables, the config file's keys, `confab serve --help`, and
 * the README's table. A value is validated when loaded; the resulting Config
 * is immutable (a reload builds a new one).
 */
import path from 'node:path';
import type { DeclaredRoom } from './core/rooms.js';
import { atMostChars, hasLoneSurrogate, hasUnsafe } from './protocol/text.js';
import { DEFAULT_MAX_HISTORY_ROOMS, DEFAULT_SQLITE_HISTORY_BYTES } from './store/common.js';
import { DEFAULT_MEMORY_HISTORY_BYTES } from './store/memory-history.js';

type Kind = 'string' | 'integer' | 'boolean' | 'file';

interface OptionSpec {
  kind: Kind;
  default: string | number | boolean | undefined;
  description: string;
  min?: number;
  max?: number;
  choices?: readonly string[];
  /** An integer option that also takes "off", meaning this value. */
  off?: number;
  /** Placeholder shown in help. */
  arg?: string;
  /** Takes effect on SIGHUP; every other option needs a restart. */
  live?: true;
  /** Only a flag or variable, not a key of the config file. */
  notInFile?: true;
  /** A boolean whose flag takes a value (`--create-rooms false`), since its default is true. */
  valued?: true;
  /** What is wrong with a string value, or undefined when nothing is. */
  check?: (value: string) => string | undefined;
}

/** The longest message of the day, in characters. */
export const MAX_MOTD = 2000;

function checkMotd(text: string): string | undefined {
  if (!atMostChars(text, MAX_MOTD)) return `at most ${MAX_MOTD} characters`;
  // Line breaks are the motd's own; every other control a terminal would obey.
  if (hasUnsafe(text.replaceAll('\n', ''))) return 'no control characters but line breaks';
  if (hasLoneSurrogate(text)) return 'not valid Unicode';
  return undefined;
}

/** The schemes with a meaning of their own in the URL standard, besides http: and https:. */
const SPECIAL_SCHEMES = new Set(['ws:', 'wss:', 'ftp:', 'file:']);

/**
 * Each entry of --allowed-origins is "*" or an origin exactly as a browser sends it in its
 * Origin header (scheme, host in lower case, port only when not the scheme's own, nothing
 * after; another scheme's host as written): the server compares the header with each as
 * text, so `https://Chat.example/` or `https://chat.example:443` would silently never match.
 * "null", which every sandboxed page sends, is refused: it would let in almost anyone.
 */
function checkOrigins(list: string): string | undefined {
  for (const entry of list.split(',').map((o) => o.trim())) {
    if (entry === '' || entry === '*') continue;
    let origin: string | undefined;
    try {
      const url = new URL(entry);
      if (url.protocol === 'http:' || url.protocol === 'https:') origin = url.origin;
      // Schemes the URL standard does not know have no origin by it, yet browsers send one
      // for an extension's pages (chrome-extension://<id>) and app web views
      // (capacitor://localhost): scheme and host as written, nothing after. ws:, wss:, ftp:
      // and file: pages never send theirs.
      else if (!SPECIAL_SCHEMES.has(url.protocol) && url.host !== '' && url.username === '')
        origin = `${url.protocol}//${url.host}`;
    } catch {
      // Not a URL at all: said below.
    }
    if (origin === entry) continue;
    if (entry === 'null') return '"null" is sent by any sandboxed page; write "*" to let any in';
    return origin === undefined
      ? `"${entry}" is not an origin such as https://chat.example.com`
      : `"${entry}" is not an origin as browsers send it; write "${origin}"`;
  }
  return undefined;
}

/**
 * Each entry of --allowed-hosts is "*" or a host name as a browser sends it in the Host
 * header, without the port: compared as text, in lower case.
 */
function checkHosts(list: string): string | undefined {
  for (const entry of list.split(',').map((h) => h.trim())) {
    if (entry === '' || entry === '*') continue;
    let name: string | undefined;
    try {
      const url = new URL(`http://${entry}`);
      name = url.hostname;
    } catch {
      // Said below.
    }
    if (name === entry) continue;
    return name === undefined || name === ''
      ? `"${entry}" is not a host name such as chat.example.com`
      : `"${entry}" is not a host name as browsers send it; write "${name}"`;
  }
  return undefined;
}

export const SERVE_OPTIONS = {
  config: {
    kind: 'file',
    default: undefined,
    description: 'YAML file of these options (keys as the flags, without "--"); re-read on SIGHUP',
    arg: 'FILE',
    notInFile: true,
  },
  host: { kind: 'string', default: '127.0.0.1', description: 'address to listen on', arg: 'ADDR' },
  port: {
    kind: 'integer',
    default: 20825,
    min: 0,
    max: 65535,
    description: 'TCP port (0 picks a free one)',
    arg: 'N',
  },
  'max-users': {
    kind: 'integer',
    default: 10,
    min: 1,
    max: 1_000_000,
    description: "capacity of the lobby (the course protocol's one room)",
    arg: 'N',
    live: true,
  },
  'room-capacity': {
    kind: 'integer',
    default: 100,
    min: 1,
    max: 1_000_000,
    description: 'capacity of rooms other than the lobby, unless declared in the config file',
    arg: 'N',
    live: true,
  },
  'create-rooms': {
    kind: 'boolean',
    default: true,
    description: 'whether joining a room that does not exist creates it',
    arg: 'BOOL',
    valued: true,
    live: true,
  },
  'max-rooms-per-client': {
    kind: 'integer',
    default: 20,
    min: 1,
    max: 1_000_000,
    description: 'rooms one client may be in at once, the lobby included',
    arg: 'N',
    live: true,
  },
  'max-rooms': {
    kind: 'integer',
    default: 10_000,
    min: 0,
    max: 10_000_000,
    description:
      'rooms that may exist at once, declared rooms included, the lobby not (per node with --redis)',
    arg: 'N',
    live: true,
  },
  'banned-words': {
    kind: 'file',
    default: undefined,
    description:
      'file of banned words, one per line (default: the course list, "i hate professor")',
    arg: 'FILE',
    live: true,
  },
  'max-frame': {
    kind: 'integer',
    default: 65536,
    min: 256,
    max: 16 * 1024 * 1024,
    description: 'largest request in bytes; a larger one closes that connection',
    arg: 'BYTES',
  },
  'max-queue': {
    kind: 'integer',
    default: 1048576,
    min: 4096,
    max: 1024 * 1024 * 1024,
    description: 'bytes queued for one client before it is disconnected as too slow',
    arg: 'BYTES',
    live: true,
  },
  'max-queue-total': {
    kind: 'integer',
    default: 256 * 1024 * 1024,
    min: 65536,
    max: 1024 * 1024 * 1024 * 1024,
    description:
      'bytes queued for all clients together, live events held behind history replays included; past it the slowest readers are disconnected, those that took nothing since they fell behind first',
    arg: 'BYTES',
    live: true,
  },
  'max-partial-total': {
    kind: 'integer',
    default: 64 * 1024 * 1024,
    min: 65536,
    max: 1024 * 1024 * 1024 * 1024,
    description:
      'bytes of requests not yet received whole, held for all TCP, TLS and WebSocket clients together; past it senders are disconnected, those not yet joined first, then those whose requests stopped growing, then the slowest',
    arg: 'BYTES',
    live: true,
  },
  'max-message': {
    kind: 'integer',
    default: 4096,
    min: 1,
    max: 1_000_000,
    description: 'longest CHAT or WHISPER message in characters; longer ones are refused',
    arg: 'CHARS',
    live: true,
  },
  'rate-limit': {
    kind: 'integer',
    default: 20,
    min: 0,
    max: 1_000_000,
    description:
      'requests per second allowed per connection after the burst; a new connection starts with what its address left, and CONNECTs from an address (unless --max-conns-per-ip is 0) get a tenth of it after a burst of as many as the address may hold (0 turns flood control off)',
    arg: 'N',
    live: true,
  },
  'rate-burst': {
    kind: 'integer',
    default: 40,
    min: 1,
    max: 1_000_000,
    description: 'requests a connection may send at once before --rate-limit applies',
    arg: 'N',
    live: true,
  },
  'max-conns': {
    kind: 'integer',
    default: 10000,
    min: 1,
    max: 1_000_000,
    description: 'open connections in total; more are answered "02" and closed',
    arg: 'N',
    live: true,
  },
  'max-conns-per-ip': {
    kind: 'integer',
    default: 128,
    min: 0,
    max: 1_000_000,
    description: 'open connections from one IP address, an IPv6 /64 counting as one (0 = no limit)',
    arg: 'N',
    live: true,
  },
  'handshake-timeout': {
    kind: 'integer',
    default: 30,
    min: 0,
    max: 3600,
    description: 'seconds a new connection has to send CONNECT (0 = no limit)',
    arg: 'S',
  },
  'stall-timeout': {
    kind: 'integer',
    default: 60,
    min: 1,
    max: 3600,
    description:
      'seconds a client may read nothing while history it asked for (or, on a cluster, a whisper) waits to be sent; then it is closed as too slow',
    arg: 'S',
  },
  keepalive: {
    kind: 'integer',
    default: 60,
    min: 0,
    max: 7200,
    description: 'seconds of silence before TCP keepalive probes detect a dead peer (0 = off)',
    arg: 'S',
  },
  'http-port': {
    kind: 'integer',
    default: 20880,
    min: 0,
    max: 65535,
    off: -1,
    description:
      'HTTP port for the web app, WebSocket (/ws), /healthz and /metrics (0 picks a free one, "off" turns it off)',
    arg: 'N',
  },
  'allowed-origins': {
    kind: 'string',
    default: '',
    description:
      'comma-separated origins allowed to open the WebSocket besides the page\'s own ("*" for any)',
    arg: 'LIST',
    live: true,
    check: checkOrigins,
  },
  'allowed-hosts': {
    kind: 'string',
    default: '',
    description:
      'comma-separated host names the web listener answers to besides IP addresses and localhost ("*" for any): a page of another name gets 403, as a DNS rebinding attack would be',
    arg: 'LIST',
    live: true,
    check: checkHosts,
  },
  'tls-port': {
    kind: 'integer',
    default: undefined,
    min: 0,
    max: 65535,
    description: 'also listen for TLS on this port, 0 a free one (needs --tls-cert and --tls-key)',
    arg: 'N',
  },
  'tls-cert': {
    kind: 'file',
    default: undefined,
    description:
      'PEM certificate chain for TLS (at most 1 MiB; one out of date is served with a warning in the log)',
    arg: 'FILE',
    live: true,
  },
  'tls-key': {
    kind: 'file',
    default: undefined,
    description: 'PEM private key for TLS',
    arg: 'FILE',
    live: true,
  },
  motd: {
    kind: 'string',
    default: '',
    description:
      'message of the day, told to clients that negotiate extensions as they join (not when they resume): up to 2,000 characters, line breaks kept',
    arg: 'TEXT',
    live: true,
    check: checkMotd,
  },
  'hide-addresses': {
    kind: 'boolean',
    default: false,
    description:
      'USERS shows "hidden" instead of members\' IP and port (--no-hide-addresses: shown, whatever the file or variable says)',
    live: true,
  },
  'shutdown-timeout': {
    kind: 'integer',
    default: 5,
    min: 0,
    max: 3600,
    description: 'seconds to flush queued messages on shutdown before closing hard',
    arg: 'S',
    live: true,
  },
  'data-dir': {
    kind: 'file',
    default: 'confab-data',
    description:
      'directory for state that outlives a restart (history.db, bans.json); created at start and held by one server (confab.lock), unused with --redis',
    arg: 'DIR',
  },
  history: {
    kind: 'string',
    default: 'sqlite',
    choices: ['sqlite', 'memory', 'off'],
    description:
      "where room history is kept: an SQLite file in --data-dir, this process's memory, or nowhere",
    arg: 'KIND',
  },
  'history-max-messages': {
    kind: 'integer',
    default: 1000,
    min: 1,
    max: 10_000_000,
    description: 'messages kept per room (the newest)',
    arg: 'N',
  },
  'history-max-age': {
    kind: 'integer',
    default: 30 * 24 * 3600,
    min: 0,
    off: 0,
    description:
      'seconds a message is kept, removed by a sweep once a minute ("off" keeps messages until the count limit)',
    arg: 'S',
  },
  'history-memory-max': {
    kind: 'integer',
    default: DEFAULT_MEMORY_HISTORY_BYTES,
    min: 65536,
    max: 64 * 1024 * 1024 * 1024,
    description:
      "with --history memory: bytes all rooms' messages may take together (each room holding any counted too); past it, the rooms holding the most are cut down to one size, losing their oldest messages, to 15/16 of it",
    arg: 'BYTES',
  },
  'history-sqlite-max': {
    kind: 'integer',
    default: DEFAULT_SQLITE_HISTORY_BYTES,
    min: 1024 * 1024,
    max: 16 * 1024 * 1024 * 1024 * 1024,
    off: 0,
    description:
      'with --history sqlite: bytes the stored messages may take ("off" for no limit; the file takes more, with SQLite\'s pages and indexes), looked at every 16 commits; past it, the rooms holding the most are cut down to one size, losing their oldest messages',
    arg: 'BYTES',
  },
  'history-max-rooms': {
    kind: 'integer',
    default: DEFAULT_MAX_HISTORY_ROOMS,
    min: 0,
    max: 100_000_000,
    off: 0,
    description:
      'rooms whose messages are kept, with --history sqlite or memory and in each Redis instance with --redis ("off" for no limit); past it, the rooms written to least recently lose all their messages',
    arg: 'N',
  },
  'history-on-join': {
    kind: 'integer',
    default: 50,
    min: 0,
    max: 1000,
    description: 'recent messages sent to a client with "history" when it joins a room',
    arg: 'N',
    live: true,
  },
  redis: {
    kind: 'string',
    default: undefined,
    description:
      'join a cluster through this Redis (redis://host:port): nicknames, rooms and history are shared with its other nodes (unset: one self-contained process)',
    arg: 'URL',
  },
  'redis-shards': {
    kind: 'string',
    default: undefined,
    description:
      'with --redis: more Redis instances (redis://a:p,redis://b:p) that rooms are spread over with the --redis one, by a hash of the room (the lobby stays on --redis); every node needs the same list in the same order',
    arg: 'URLS',
  },
  'cluster-timeout': {
    kind: 'integer',
    default: 10,
    min: 1,
    max: 3600,
    description:
      'with --redis: seconds a node may go without a heartbeat before the others remove its members (it closes its own clients after as long cut off)',
    arg: 'S',
  },
  'log-level': {
    kind: 'string',
    default: 'info',
    choices: ['debug', 'info', 'warn', 'error', 'silent'],
    description: 'least severe level logged',
    arg: 'LEVEL',
    live: true,
  },
  'log-format': {
    kind: 'string',
    default: 'pretty',
    choices: ['pretty', 'json'],
    description: 'human-readable lines, or JSON lines for log collectors',
    arg: 'FORMAT',
  },
} as const satisfies Record<string, OptionSpec>;

type Specs = typeof SERVE_OPTIONS;
export type OptionName = keyof Specs;

type ValueOf<S extends OptionSpec> = S['kind'] extends 'integer'
  ? S['default'] extends undefined
    ? number | undefined
    : number
  : S['kind'] extends 'boolean'
    ? boolean
    : S['default'] extends undefined
      ? string | undefined
      : string;

type CamelCase<S extends string> = S extends `${infer H}-${infer T}`
  ? `${H}${Capitalize<CamelCase<T>>}`
  : S;

/** An operator from the config file's `operators` list: a name and a `confab hash-password` hash. */
export interface OperatorEntry {
  readonly name: string;
  readonly password: string;
}

export type Config = { readonly [K in OptionName as CamelCase<K>]: ValueOf<Specs[K]> } & {
  /** Only from the config file (a list has no flag); SIGHUP applies it to new OPERs. */
  readonly operators: readonly OperatorEntry[];
  /** Rooms declared in the config file's `rooms` key, each with its capacity. */
  readonly rooms: readonly ConfiguredRoom[];
};

/** A room of the config file; one declared without a capacity takes --room-capacity's. */
export interface ConfiguredRoom extends DeclaredRoom {
  /** The capacity the file gave it, if any: what --print-config writes back. */
  readonly declaredCapacity: number | undefined;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function envName(option: string): string {
  return `CONFAB_${option.toUpperCase().replaceAll('-', '_')}`;
}

function camel(option: string): string {
  return option.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

function convert(
  spec: OptionSpec,
  raw: string,
  source: string,
): string | number | boolean | undefined {
  switch (spec.kind) {
    case 'integer': {
      if (spec.off !== undefined && raw.trim().toLowerCase() === 'off') return spec.off;
      if (!/^-?\d+$/.test(raw.trim()))
        throw new ConfigError(
          `${source}: expected a whole number${spec.off === undefined ? '' : ' or off'}, got "${raw}"`,
        );
      const n = Number(raw);
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
        throw new ConfigError(`${source}: ${n} is outside ${spec.min}..${spec.max}`);
      }
      return n;
    }
    case 'boolean': {
      const v = raw.trim().toLowerCase();
      if (['1', 'true', 'yes', 'on', ''].includes(v)) return true;
      if (['0', 'false', 'no', 'off'].includes(v)) return false;
      throw new ConfigError(`${source}: expected true or false, got "${raw}"`);
    }
    default:
      if (spec.choices !== undefined && !spec.choices.includes(raw)) {
        throw new ConfigError(
          `${source}: expected one of ${spec.choices.join(', ')}, got "${raw}"`,
        );
      }
      if (spec.check !== undefined) {
        const problem = spec.check(raw);
        if (problem !== undefined) throw new ConfigError(`${source}: ${problem}`);
      }
      if (raw === '') {
        // An empty file option means "not set", so CONFAB_BANNED_WORDS= restores the default.
        if (spec.kind === 'file') return undefined;
        if (spec.default === '') return raw;
        throw new ConfigError(`${source}: must not be empty`);
      }
      return raw;
  }
}

/** A config file's settings as read, before validation (see config-file.ts). */
export interface ConfigFile {
  /** The file as named on the command line, for messages. */
  name: string;
  /** Relative paths in the file are relative to its directory. */
  dir: string;
  settings: ReadonlyMap<string, { raw: string; line: number }>;
  /** The `operators` list, validated; absent when the file has none. */
  operators?: readonly OperatorEntry[];
  /** The `rooms` key, validated; a room without a capacity takes --room-capacity. */
  rooms?: readonly { name: string; capacity: number | undefined; line: number }[];
}

/** Every option's name in the table's order. */
export const OPTION_NAMES = Object.keys(SERVE_OPTIONS) as OptionName[];

/** The Config field an option lands in. */
export function configKey(option: OptionName): keyof Config {
  return camel(option) as keyof Config;
}

export function isLive(option: OptionName): boolean {
  return (SERVE_OPTIONS[option] as OptionSpec).live === true;
}

export function isFileKey(option: OptionName): boolean {
  return (SERVE_OPTIONS[option] as OptionSpec).notInFile !== true;
}

/**
 * Resolves every option: a flag wins over its environment variable, which
 * wins over the config file, which wins over the default. File paths come
 * out absolute, so a printed configuration means the same from anywhere.
 */
export function loadConfig(
  flags: Readonly<Record<string, string | boolean | undefined>>,
  env: Readonly<Record<string, string | undefined>>,
  file?: ConfigFile,
): Config {
  if (file !== undefined) {
    for (const [key, { line }] of file.settings) {
      const spec = (SERVE_OPTIONS as Record<string, OptionSpec>)[key];
      if (spec === undefined || spec.notInFile === true) {
        throw new ConfigError(
          `${file.name}:${line}: ${key}: ${spec === undefined ? 'unknown option' : 'cannot be set in the config file'} (see confab serve --help)`,
        );
      }
    }
  }
  const out: Record<string, string | number | boolean | undefined> = {};
  for (const [name, spec] of Object.entries(SERVE_OPTIONS) as [string, OptionSpec][]) {
    const flag = flags[name];
    const fromEnv = env[envName(name)];
    const fromFile = file?.settings.get(name);
    let value: string | number | boolean | undefined = spec.default;
    let base = '.';
    if (flag !== undefined) {
      value = typeof flag === 'boolean' ? flag : convert(spec, flag, `--${name}`);
    } else if (fromEnv !== undefined) {
      value = convert(spec, fromEnv, envName(name));
    } else if (fromFile !== undefined && file !== undefined) {
      value = convert(spec, fromFile.raw, `${file.name}:${fromFile.line}: ${name}`);
      base = file.dir;
    }
    if (spec.kind === 'file' && typeof value === 'string') value = path.resolve(base, value);
    out[camel(name)] = value;
  }
  const operators: unknown = Object.freeze([...(file?.operators ?? [])]);
  (out as Record<string, unknown>).operators = operators;
  const roomCapacity = out.roomCapacity as number;
  const rooms: ConfiguredRoom[] = (file?.rooms ?? []).map((r) => ({
    name: r.name,
    capacity: r.capacity ?? roomCapacity,
    declaredCapacity: r.capacity,
  }));
  const tls = [out.tlsPort, out.tlsCert, out.tlsKey].filter((v) => v !== undefined).length;
  if (tls !== 0 && tls !== 3) {
    throw new ConfigError('TLS needs all three of --tls-port, --tls-cert and --tls-key');
  }
  if (out.redisShards !== undefined) {
    if (out.redis === undefined) throw new ConfigError('--redis-shards needs --redis');
    const urls = shardUrls(out.redisShards as string);
    if (urls.length === 0) throw new ConfigError('--redis-shards: expected redis:// URLs');
    const all = [out.redis as string, ...urls];
    const twice = all.find((url, i) => all.indexOf(url) !== i);
    if (twice !== undefined) {
      throw new ConfigError(`--redis-shards: ${twice} is named twice (with --redis)`);
    }
  }
  return Object.freeze({ ...out, rooms: Object.freeze(rooms) }) as unknown as Config;
}

/** The URLs of --redis-shards, in order (a comma-separated list; blanks around them ignored). */
export function shardUrls(list: string | undefined): string[] {
  return (list ?? '')
    .split(',')
    .map((url) => url.trim())
    .filter((url) => url !== '');
}

/** Options in the shape node:util parseArgs takes. */
export function parseArgsOptions(): Record<string, { type: 'string' | 'boolean' }> {
  const options: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const [name, spec] of Object.entries(SERVE_OPTIONS) as [string, OptionSpec][]) {
    options[name] = {
      type: spec.kind === 'boolean' && spec.valued !== true ? 'boolean' : 'string',
    };
  }
  return options;
}

/** An option's description, naming its values when it takes only some. */
export function describeOption(spec: { description: string; choices?: readonly string[] }): string {
  return spec.choices === undefined
    ? spec.description
    : `${spec.description} (${spec.choices.join(', ')})`;
}

export function optionsHelp(): string {
  const rows = (Object.entries(SERVE_OPTIONS) as [string, OptionSpec][]).map(([name, spec]) => {
    const left = `  --${name}${spec.arg ? ` ${spec.arg}` : ''}`;
    const def =
      spec.default === undefined || spec.default === '' ? '' : ` (default: ${spec.default})`;
    return `${left.padEnd(30)} ${describeOption(spec)}${def}\n${''.padEnd(31)}env ${envName(name)}`;
  });
  return rows.join('\n');
}

/** The README's configuration table, generated so it cannot drift. */
export function optionsMarkdown(): string {
  const lines = ['| flag | environment | default | on SIGHUP | meaning |', '|---|---|---|---|---|'];
  for (const [name, spec] of Object.entries(SERVE_OPTIONS) as [string, OptionSpec][]) {
    // An empty default (no extra origins) would print as an empty code span.
    const def = spec.default === undefined || spec.default === '' ? '—' : `\`${spec.default}\``;
    const reload = spec.notInFile ? '—' : spec.live ? 'applied' : 'restart';
    lines.push(
      `| \`--${name}\` | \`${envName(name)}\` | ${def} | ${reload} | ${describeOption(spec).replaceAll('|', '\\|')} |`,
    );
  }
  return lines.join('\n');
}
