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
  SERVE_OPTIONS,
} from './config.js';

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
  return { name, dir, settings };
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
  return `${out.join('\n')}\n`;
}
