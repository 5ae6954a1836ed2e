import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { parseConfigFile, printConfig } from '../../src/config-file.js';
import { hashPassword, verifyPassword } from '../../src/password.js';

const hash = hashPassword('sesame');
const file = (text: string) => parseConfigFile(text, 'confab.yaml', '/etc/confab');

describe('operators in the config file', () => {
  it('reads a list of name and password hash, and prints it back', () => {
    const config = loadConfig(
      {},
      {},
      file(`max-users: 5\noperators:\n  - name: teacher\n    password: "${hash}"\n`),
    );
    expect(config.operators).toEqual([{ name: 'teacher', password: hash }]);
    expect(verifyPassword('sesame', config.operators[0]!.password)).toBe(true);
    const again = loadConfig({}, {}, file(printConfig(config)));
    expect(again.operators).toEqual(config.operators);
    expect(loadConfig({}, {}).operators).toEqual([]);
  });

  it('reports a bad entry with its line', () => {
    const cases: [string, RegExp][] = [
      ['operators: teacher\n', /^confab\.yaml:1: operators: expected a list/],
      ['x: 1\noperators:\n  - teacher\n', /^confab\.yaml:3: operators: expected "name/],
      ['operators:\n  - name: t\n', /^confab\.yaml:2: operators: each operator needs both/],
      [
        'operators:\n  - name: t\n    password: hunter2\n',
        /^confab\.yaml:2: operators: t: password: expected a hash/,
      ],
      [
        `operators:\n  - name: t\n    password: "${hash}"\n  - name: t\n    password: "${hash}"\n`,
        /^confab\.yaml:4: operators: t is listed twice/,
      ],
      [
        `operators:\n  - name: t\n    pass: "${hash}"\n`,
        /^confab\.yaml:2: operators: unknown key "pass"/,
      ],
    ];
    for (const [text, message] of cases) expect(() => file(text), text).toThrow(message);
  });

  it('a hash verifies only its password, and a malformed or costly hash never verifies', () => {
    expect(verifyPassword('sesame', hash)).toBe(true);
    expect(verifyPassword('Sesame', hash)).toBe(false);
    expect(verifyPassword('sesame', 'scrypt$16384$8$1$abc$')).toBe(false);
    expect(verifyPassword('sesame', hash.replace('16384', '2097152'))).toBe(false);
    expect(hashPassword('sesame')).not.toBe(hash);
  });
});
