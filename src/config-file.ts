/**
 * The config file: YAML, one key per option (named as the flag), read with
 * the `yaml` package because it keeps every node's position, so a bad value
 * is reported with its line. Validation itself is loadConfig's, as for flags.
 */
import path from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument, stringify } from 'yaml';
import {
  type Config,
  ConfigError,
  type ConfigFile,
  configKey,
  describeOption,
  isFileKey,
  isLive,
  OPTION_NAMES,
  type OperatorEntry,
  SERVE_OPTIONS,
} from './config.js';
import { checkRoomName, roomKey } from './core/rooms.js';
import { checkHash } from './password.js';
import { LOBBY } from './protocol/codes.js';
import { readCappedSync, readError } from './read-capped.js';

type Rooms = NonNullable<ConfigFile['rooms']>;
const MAX_ROOM_CAPACITY = 1_000_000;

/**
 * The `rooms` key: a list of `{name, capacity?}`. Names follow the room rules
 * and may not repeat in any look-alike spelling; the lobby is --max-users.
 */
function parseRooms(
  node: unknown,
  name: string,
  keyLine: number,
  at: (offset: number | undefined) => { line: number },
): Rooms {
  const lineOf = (n: unknown) => at((n as Node | null)?.range?.[0]).line;
  if (node === null || (isScalar(node) && node.value === null)) return [];
  if (!isSeq(node)) {
    throw new ConfigError(
      `${name}:${keyLine}: rooms: expected a list of rooms, like "rooms: [{name: physics, capacity: 30}]"`,
    );
  }
  const rooms: { name: string; capacity: number | undefined; line: number }[] = [];
  const seen = new Map<string, number>();
  for (const item of node.items) {
    const line = lineOf(item);
    const where = `${name}:${line}: rooms`;
    if (!isMap(item))
      throw new ConfigError(`${where}: each room must be {name: ..., capacity: ...}`);
    let roomName: string | undefined;
    let capacity: number | undefined;
    for (const pair of item.items) {
      const key = isScalar(pair.key) ? pair.key.value : undefined;
      const value = pair.value;
      const valueLine = lineOf(value ?? pair.key);
      if (key === 'name') {
        if (
          !isScalar(value) ||
          (typeof value.value !== 'string' && typeof value.value !== 'number')
        )
          throw new ConfigError(`${name}:${valueLine}: rooms: name must be a single value`);
        const checked = checkRoomName(String(value.value));
        if (!checked.ok) throw new ConfigError(`${name}:${valueLine}: rooms: ${checked.reason}`);
        roomName = checked.nickname;
      } else if (key === 'capacity') {
        if (
          !isScalar(value) ||
          typeof value.value !== 'number' ||
          !Number.isInteger(value.value) ||
          value.value < 1 ||
          value.value > MAX_ROOM_CAPACITY
        ) {
          throw new ConfigError(
            `${name}:${valueLine}: rooms: capacity must be a whole number in 1..${MAX_ROOM_CAPACITY}`,
          );
        }
        capacity = value.value;
      } else {
        throw new ConfigError(
          `${name}:${lineOf(pair.key)}: rooms: unknown key ${JSON.stringify(String(key))} (a room has name and capacity)`,
        );
      }
    }
    if (roomName === undefined) throw new ConfigError(`${where}: a room needs a name`);
    const key = roomKey(roomName);
    if (key === roomKey(LOBBY)) {
      throw new ConfigError(
        `${where}: ${roomName}: the lobby cannot be declared (its capacity is max-users)`,
      );
    }
    const first = seen.get(key);
    if (first !== undefined) {
      throw new ConfigError(`${where}: ${roomName}: the same room as the one on line ${first}`);
    }
    seen.set(key, line);
    rooms.push({ name: roomName, capacity, line });
  }
  return rooms;
}

/** Parses a config file's text; `name` is how messages refer to it. */
export function parseConfigFile(text: string, name: string, dir = '.'): ConfigFile {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined) => lines.linePos(offset ?? 0);
  const first = doc.errors[0];
  if (first !== undefined) {
    const { line, col } = at(first.pos[0]);
    throw new ConfigError(`${name}:${line}:${col}: ${first.message.split('\n')[0]}`);
  }
  const settings = new Map<string, { raw: string; line: number }>();
  let operators: OperatorEntry[] | undefined;
  let rooms: Rooms | undefined;
  const root = doc.contents;
  if (root === null || (isScalar(root) && root.value === null)) {
    return { name, dir, settings };
  }
  if (!isMap(root)) {
    throw new ConfigError(`${name}:${at(root.range?.[0]).line}: expected "option: value" lines`);
  }
  for (const pair of root.items) {
    const keyNode = pair.key;
    const line = at(isScalar(keyNode) ? keyNode.range?.[0] : undefined).line;
    if (!isScalar(keyNode) || typeof keyNode.value !== 'string') {
      throw new ConfigError(`${name}:${line}: a key must be an option name`);
    }
    const key = keyNode.value;
    const node = pair.value;
    if (key === 'operators') {
      operators = parseOperators(node, name, line, at);
      continue;
    }
    if (key === 'rooms') {
      rooms = parseRooms(node, name, line, at);
      continue;
    }
    let raw: string;
    if (node === null || (isScalar(node) && node.value === null)) {
      // "key:" with nothing after it: as an empty CONFAB_* variable would be.
      raw = '';
    } else if (
      isScalar(node) &&
      (typeof node.value === 'string' ||
        typeof node.value === 'number' ||
        typeof node.value === 'boolean')
    ) {
      raw = String(node.value);
    } else {
      const kind = isMap(node)
        ? 'a mapping'
        : isSeq(node)
          ? 'a list'
          : isScalar(node)
            ? 'a tagged value'
            : 'an alias';
      throw new ConfigError(`${name}:${line}: ${key}: expected a single value, got ${kind}`);
    }
    settings.set(key, { raw, line });
  }
  const file: ConfigFile = { name, dir, settings };
  if (operators !== undefined) file.operators = operators;
  if (rooms !== undefined) file.rooms = rooms;
  return file;
}

/**
 * operators:
 *   - name: teacher
 *     password: "scrypt$16384$8$1$...$..."   # from confab hash-password
 */
function parseOperators(
  node: unknown,
  file: string,
  line: number,
  at: (offset: number | undefined) => { line: number },
): OperatorEntry[] {
  if (node === null || (isScalar(node) && node.value === null)) return [];
  if (!isSeq(node)) {
    throw new ConfigError(
      `${file}:${line}: operators: expected a list of "- name: ...\n  password: ..." entries`,
    );
  }
  const out: OperatorEntry[] = [];
  for (const item of node.items) {
    const itemLine = at((item as { range?: [number] } | null)?.range?.[0]).line;
    const where = `${file}:${itemLine}: operators`;
    if (!isMap(item)) throw new ConfigError(`${where}: expected "name: ..." and "password: ..."`);
    const fields = new Map<string, string>();
    for (const pair of item.items) {
      const k = isScalar(pair.key) ? pair.key.value : undefined;
      if (k !== 'name' && k !== 'password')
        throw new ConfigError(
          `${where}: unknown key ${JSON.stringify(String(k))} (name, password)`,
        );
      const v = pair.value;
      if (!isScalar(v) || typeof v.value !== 'string' || v.value === '')
        throw new ConfigError(`${where}: ${k}: expected a non-empty string`);
      fields.set(k, v.value);
    }
    const opName = fields.get('name');
    const password = fields.get('password');
    if (opName === undefined || password === undefined)
      throw new ConfigError(`${where}: each operator needs both name and password`);
    const bad = checkHash(password);
    if (bad !== undefined) throw new ConfigError(`${where}: ${opName}: password: ${bad}`);
    if (out.some((o) => o.name === opName))
      throw new ConfigError(`${where}: ${opName} is listed twice`);
    out.push({ name: opName, password });
  }
  return out;
}

/** A config file is a page of options and a list of operators, far below this. */
const CONFIG_FILE_MAX_BYTES = 1024 * 1024;

/** `reloading`: a running server reads a regular file only (src/read-capped.ts). */
export function readConfigFile(file: string, reloading = false): ConfigFile {
  let text: string;
  try {
    text = readCappedSync(file, CONFIG_FILE_MAX_BYTES, reloading).toString('utf8');
  } catch (err) {
    throw new ConfigError(`${file}: cannot read the config file (${readError(err)})`);
  }
  return parseConfigFile(text, file, path.dirname(path.resolve(file)));
}

/**
 * The effective configuration as a config file, every option with its
 * description; options that are not set are left commented out.
 */
export function printConfig(config: Config): string {
  const out = [
    '# confab configuration (YAML). Keys are the options of "confab serve --help";',
    '# a flag or CONFAB_* variable overrides a key. SIGHUP re-reads this file.',
  ];
  for (const name of OPTION_NAMES) {
    if (!isFileKey(name)) continue;
    const spec = SERVE_OPTIONS[name];
    let value: unknown = config[configKey(name)];
    if ('off' in spec && value === spec.off) value = 'off';
    out.push('', `# ${describeOption(spec)}${isLive(name) ? '' : ' [restart to change]'}`);
    out.push(
      value === undefined
        ? `# ${name}:`
        : `${name}: ${stringify(value, { lineWidth: 0 }).trimEnd()}`,
    );
  }
  out.push('', '# operators: who may OPER (\\oper), with hashes from "confab hash-password"');
  if (config.operators.length === 0)
    out.push('# operators:', '#   - name: teacher', '#     password: "scrypt$..."');
  else
    out.push(
      stringify(
        { operators: config.operators.map((o) => ({ name: o.name, password: o.password })) },
        { lineWidth: 0 },
      ).trimEnd(),
    );
  out.push(
    '',
    '# rooms that exist even when empty, each with its capacity (room-capacity if none)',
  );
  out.push(
    config.rooms.length === 0
      ? '# rooms: [{name: physics, capacity: 30}]'
      : `rooms: ${stringify(
          // A room declared without a capacity stays so, and keeps following room-capacity.
          config.rooms.map((r) =>
            r.declaredCapacity === undefined
              ? { name: r.name }
              : { name: r.name, capacity: r.declaredCapacity },
          ),
          { lineWidth: 0, flow: true },
        ).trimEnd()}`,
  );
  return `${out.join('\n')}\n`;
}
