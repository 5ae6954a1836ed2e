import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  envName,
  loadConfig,
  optionsHelp,
  optionsMarkdown,
  SERVE_OPTIONS,
  shardUrls,
} from '../../src/config.js';
import { parseConfigFile, printConfig } from '../../src/config-file.js';

describe('loadConfig', () => {
  it('uses documented defaults', () => {
    const c = loadConfig({}, {});
    expect(c.host).toBe('127.0.0.1');
    expect(c.port).toBe(20825);
    expect(c.maxUsers).toBe(10);
    expect(c.maxFrame).toBe(65536);
    expect(c.bannedWords).toBeUndefined();
    expect(c.tlsPort).toBeUndefined();
  });

  it('prefers a flag over its environment variable over the default', () => {
    expect(loadConfig({}, { CONFAB_PORT: '4000' }).port).toBe(4000);
    expect(loadConfig({ port: '5000' }, { CONFAB_PORT: '4000' }).port).toBe(5000);
    expect(loadConfig({}, { CONFAB_HIDE_ADDRESSES: 'yes' }).hideAddresses).toBe(true);
    expect(loadConfig({ 'hide-addresses': true }, {}).hideAddresses).toBe(true);
    expect(loadConfig({}, { CONFAB_BANNED_WORDS: '' }).bannedWords).toBeUndefined();
  });

  it('takes --redis-shards as a list of URLs besides --redis, each named once', () => {
    const redis = 'redis://127.0.0.1:7000';
    const c = loadConfig(
      { redis, 'redis-shards': ' redis://127.0.0.1:7001, redis://127.0.0.1:7002 ,' },
      {},
    );
    expect(shardUrls(c.redisShards)).toEqual(['redis://127.0.0.1:7001', 'redis://127.0.0.1:7002']);
    expect(shardUrls(loadConfig({ redis }, {}).redisShards)).toEqual([]);
    const fromFile = parseConfigFile(
      `redis: ${redis}\nredis-shards: redis://127.0.0.1:7001,redis://127.0.0.1:7002\n`,
      'config.yaml',
    );
    expect(shardUrls(loadConfig({}, {}, fromFile).redisShards)).toHaveLength(2);
    expect(() => loadConfig({ 'redis-shards': 'redis://127.0.0.1:7001' }, {})).toThrow(
      /--redis-shards needs --redis/,
    );
    expect(() => loadConfig({ redis, 'redis-shards': ' , ' }, {})).toThrow(/expected redis:/);
    expect(() => loadConfig({ redis, 'redis-shards': redis }, {})).toThrow(/named twice/);
    expect(() =>
      loadConfig({ redis, 'redis-shards': 'redis://127.0.0.1:7001,redis://127.0.0.1:7001' }, {}),
    ).toThrow(/named twice/);
  });

  it('names every option CONFAB_ plus its flag in upper snake case', () => {
    expect(envName('max-conns-per-ip')).toBe('CONFAB_MAX_CONNS_PER_IP');
    expect(Object.keys(SERVE_OPTIONS).length).toBeGreaterThan(10);
  });

  it('rejects bad values with the source named', () => {
    expect(() => loadConfig({ port: '70000' }, {})).toThrow(/--port: 70000 is outside 0..65535/);
    expect(() => loadConfig({}, { CONFAB_MAX_USERS: 'ten' })).toThrow(
      /CONFAB_MAX_USERS: expected a whole number/,
    );
    // An option that also takes "off" says so.
    expect(() => loadConfig({ 'http-port': 'foo' }, {})).toThrow(
      /--http-port: expected a whole number or off, got "foo"/,
    );
    expect(() => loadConfig({ 'log-format': 'xml' }, {})).toThrow(ConfigError);
    expect(() => loadConfig({}, { CONFAB_HIDE_ADDRESSES: 'maybe' })).toThrow(/true or false/);
  });

  it('takes --allowed-origins only as origins a browser sends, and says how to write one', () => {
    const ok = '*, https://chat.example.com,http://127.0.0.1:8080 ,http://[::1]:3000';
    expect(loadConfig({ 'allowed-origins': ok }, {}).allowedOrigins).toBe(ok);
    // Origins of other schemes, as browsers send them for an extension's pages or an app's
    // web view (Capacitor, Tauri): compared as text like any other, and refused since 19c6727.
    const apps = 'chrome-extension://abcdefgh,moz-extension://1234-ab,capacitor://localhost';
    expect(loadConfig({ 'allowed-origins': apps }, {}).allowedOrigins).toBe(apps);
    expect(() => loadConfig({}, { CONFAB_ALLOWED_ORIGINS: 'https://a.example/' })).toThrow(
      'CONFAB_ALLOWED_ORIGINS: "https://a.example/" is not an origin as browsers send it;',
    );
    for (const [value, says] of [
      ['https://chat.example.com/', 'write "https://chat.example.com"'],
      ['https://Chat.Example.com', 'write "https://chat.example.com"'],
      ['https://chat.example.com:443', 'write "https://chat.example.com"'],
      ['https://a.example,chat.example.com', '"chat.example.com" is not an origin'],
      ['ftp://files.example', '"ftp://files.example" is not an origin'],
      ['not an origin', '"not an origin" is not an origin such as https://chat.example.com'],
      ['https://a.example,null', '"null" is sent by any sandboxed page; write "*" to let any in'],
      ['chrome-extension://abcdefgh/', 'write "chrome-extension://abcdefgh"'],
      ['file:///home/ann/chat.html', 'is not an origin such as https://chat.example.com'],
      ['wss://chat.example.com', '"wss://chat.example.com" is not an origin such as'],
    ]) {
      expect(() => loadConfig({ 'allowed-origins': value! }, {}), value).toThrow(says!);
    }
  });

  it('takes --allowed-hosts only as host names a browser sends, and says how to write one', () => {
    const ok = '*, chat.example.com,localhost , 192.0.2.7';
    expect(loadConfig({ 'allowed-hosts': ok }, {}).allowedHosts).toBe(ok);
    for (const [value, says] of [
      ['Chat.Example.com', 'write "chat.example.com"'],
      ['chat.example.com:443', 'write "chat.example.com"'],
      ['https://chat.example.com', 'is not a host name'],
      ['a b', '"a b" is not a host name such as chat.example.com'],
    ]) {
      expect(() => loadConfig({ 'allowed-hosts': value! }, {}), value).toThrow(says!);
    }
  });

  it('takes "off" for the HTTP port', () => {
    expect(loadConfig({ 'http-port': 'off' }, {}).httpPort).toBe(-1);
    // Written as a person might: "off" in any case, as true and false are.
    expect(loadConfig({}, { CONFAB_HTTP_PORT: 'OFF' }).httpPort).toBe(-1);
    expect(loadConfig({ 'http-port': ' Off ' }, {}).httpPort).toBe(-1);
    expect(loadConfig({}, { CONFAB_HTTP_PORT: '8080' }).httpPort).toBe(8080);
    expect(() => loadConfig({ 'http-port': '-5' }, {})).toThrow(/outside/);
  });

  it('needs all of the TLS options or none', () => {
    expect(() => loadConfig({ 'tls-port': '7000' }, {})).toThrow(/TLS needs all three/);
    const c = loadConfig({ 'tls-port': '7000', 'tls-cert': 'c.pem', 'tls-key': 'k.pem' }, {});
    expect(c.tlsPort).toBe(7000);
  });
});

describe("the README's options table", () => {
  it('shows every default as something a reader can see', () => {
    for (const row of optionsMarkdown().split('\n').slice(2)) {
      const cells = row.split(' | ');
      // An empty default must not become an empty code span, which Markdown prints as two backticks.
      expect(cells[2], row).toMatch(/^(—|`[^`]+`)$/);
    }
  });
});

describe('serve --help', () => {
  it('prints no empty default', () => {
    expect(optionsHelp()).not.toContain('(default: )');
    expect(optionsHelp()).toMatch(/--allowed-origins LIST +[^\n]*\("\*" for any\)\n/);
  });

  it('names the values of an option that takes only some, as the README table does', () => {
    for (const [name, spec] of Object.entries(SERVE_OPTIONS)) {
      if (!('choices' in spec)) continue;
      const values = `(${spec.choices.join(', ')})`;
      const line = optionsHelp()
        .split('\n')
        .find((l) => l.startsWith(`  --${name} `));
      expect(line, name).toContain(values);
      const row = optionsMarkdown()
        .split('\n')
        .find((r) => r.startsWith(`| \`--${name}\``));
      expect(row, name).toContain(values);
    }
  });
});

describe('the config file', () => {
  const file = (text: string) => parseConfigFile(text, 'config.yaml', '/etc/confab');

  it('sits between the environment and the defaults', () => {
    const f = file('port: 3000\nmax-users: 5\nhide-addresses: yes\n');
    const c = loadConfig({}, {}, f);
    expect([c.port, c.maxUsers, c.hideAddresses, c.maxFrame]).toEqual([3000, 5, true, 65536]);
    expect(loadConfig({}, { CONFAB_PORT: '4000' }, f).port).toBe(4000);
    expect(loadConfig({ port: '5000' }, { CONFAB_PORT: '4000' }, f).port).toBe(5000);
  });

  it('reads paths relative to the file, and flag paths relative to the working directory', () => {
    expect(loadConfig({}, {}, file('banned-words: words.txt')).bannedWords).toBe(
      '/etc/confab/words.txt',
    );
    expect(loadConfig({ 'banned-words': 'w.txt' }, {}, file('')).bannedWords).toBe(
      path.resolve('w.txt'),
    );
  });

  it('names the file, line and key of a bad value', () => {
    const bad = file('# settings\nport: 0\n\nmax-users: ten\n');
    expect(() => loadConfig({}, {}, bad)).toThrow(
      'config.yaml:4: max-users: expected a whole number, got "ten"',
    );
    expect(() => loadConfig({}, {}, file('max-users: 2\ncolour: red'))).toThrow(
      'config.yaml:2: colour: unknown option',
    );
    expect(() => loadConfig({}, {}, file('config: other.yaml'))).toThrow(
      'config.yaml:1: config: cannot be set in the config file',
    );
    expect(() => file('port: [1, 2]')).toThrow('config.yaml:1: port: expected a single value');
    expect(() => file('port: 1\nport: 2')).toThrow(/^config.yaml:2:\d+: Map keys must be unique/);
    expect(() => file('- port')).toThrow('config.yaml:1: expected "option: value" lines');
    expect(() => file('host: "open')).toThrow(/^config.yaml:1:\d+: /);
  });

  it('takes an empty or comment-only file as no settings', () => {
    expect(file('').settings.size).toBe(0);
    expect(file('# nothing yet\n').settings.size).toBe(0);
  });

  it('round-trips any valid configuration through --print-config', () => {
    const integer = (name: keyof typeof SERVE_OPTIONS) => {
      const spec = SERVE_OPTIONS[name] as { min?: number; max?: number };
      return fc.integer({ min: spec.min ?? 0, max: spec.max ?? 1000 }).map(String);
    };
    const settings = fc.record(
      {
        host: fc.constantFrom('127.0.0.1', '::1', '0.0.0.0', 'localhost'),
        port: integer('port'),
        'max-users': integer('max-users'),
        'rate-limit': integer('rate-limit'),
        'http-port': fc.oneof(integer('http-port'), fc.constant('off')),
        'allowed-origins': fc
          .subarray(['*', 'https://chat.example.com', 'http://127.0.0.1:8080', 'http://[::1]:3000'])
          .map((origins) => origins.join(',')),
        'banned-words': fc.string({ minLength: 1 }),
        'hide-addresses': fc.boolean(),
        'log-level': fc.constantFrom('debug', 'info', 'warn', 'error', 'silent'),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(settings, (flags) => {
        const before = loadConfig(flags, {});
        const printed = printConfig(before);
        const after = loadConfig({}, {}, parseConfigFile(printed, 'printed.yaml', '/elsewhere'));
        expect(after).toEqual(before);
        expect(printConfig(after)).toBe(printed);
      }),
      { numRuns: 200 },
    );
  });

  it('turns any text into settings or a ConfigError, nothing else', () => {
    const keys = fc.constantFrom(...Object.keys(SERVE_OPTIONS), 'colour', '');
    const part = fc.oneof(
      fc.tuple(keys, fc.string()).map(([k, v]) => `${k}: ${v}`),
      fc.constantFrom('- ', '  ', ':', '{', '[', '"', "'", '&a', '*a', '!!str', '#', '? '),
      fc.string(),
    );
    const yamlish = fc
      .array(fc.tuple(part, fc.constantFrom('\n', ' ', '')), { maxLength: 12 })
      .map((parts) => parts.map(([p, sep]) => p + sep).join(''));
    fc.assert(
      fc.property(fc.oneof(yamlish, fc.string({ unit: 'binary' })), (text) => {
        try {
          loadConfig({}, {}, file(text));
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError);
          expect((err as Error).message).toMatch(
            /^(config\.yaml:\d+(:\d+)?: |TLS needs|--redis-shards)/,
          );
        }
      }),
      { numRuns: 500 },
    );
  });
});
