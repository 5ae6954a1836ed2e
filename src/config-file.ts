/**
 * The config file: YAML, one key per option (named as the flag), read with
 * the `yaml` package because it keeps every node's position, so a bad value
 * is reported with its line. Validation itself is loadConfig's, as for flags.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, stringify } from 'yaml';
import {
  type Config,
  ConfigError,
  type ConfigFile,
  configKey,
  isFileKey,
  isLive,
  OPTION_NAMES,
  type OperatorEntry,
  SERVE_OPTIONS,
} from './config.js';
import { checkHash } from './password.js';

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
  return operators === undefined ? { name, dir, settings } : { name, dir, settings, operators };
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

export function readConfigFile(file: string): ConfigFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const { code, message } = err as NodeJS.ErrnoException;
    throw new ConfigError(`${file}: cannot read the config file (${code ?? message})`);
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
    out.push('', `# ${spec.description}${isLive(name) ? '' : ' [restart to change]'}`);
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
  return `${out.join('\n')}\n`;
}
