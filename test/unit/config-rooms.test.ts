import { parseArgs } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseArgsOptions } from '../../src/config.js';
import { parseConfigFile, printConfig } from '../../src/config-file.js';

const load = (text: string, flags: Record<string, string> = {}) =>
  loadConfig(flags, {}, parseConfigFile(text, 'config.yaml', '/etc/confab'));

describe('room options', () => {
  it('defaults: rooms of 100, made by joining, 20 per client, none declared', () => {
    const c = loadConfig({}, {});
    expect([c.roomCapacity, c.createRooms, c.maxRoomsPerClient, c.rooms]).toEqual([
      100,
      true,
      20,
      [],
    ]);
  });

  it('takes --create-rooms false on the command line', () => {
    const { values } = parseArgs({
      args: ['--create-rooms', 'false', '--room-capacity', '30'],
      options: parseArgsOptions(),
      strict: true,
    });
    const c = loadConfig(values, {});
    expect(c.createRooms).toBe(false);
    expect(c.roomCapacity).toBe(30);
    expect(loadConfig({}, { CONFAB_CREATE_ROOMS: 'no' }).createRooms).toBe(false);
  });

  it('reads declared rooms, a missing capacity taking --room-capacity', () => {
    const c = load(
      'room-capacity: 7\nrooms:\n  - {name: physics, capacity: 30}\n  - name: maths\n',
    );
    expect(c.rooms).toEqual([
      { name: 'physics', capacity: 30, declaredCapacity: 30 },
      { name: 'maths', capacity: 7, declaredCapacity: undefined },
    ]);
  });

  it('prints a room declared without a capacity without one, so it keeps following --room-capacity', () => {
    const printed = printConfig(
      load('room-capacity: 7\nrooms:\n  - {name: physics, capacity: 30}\n  - name: maths\n'),
    );
    expect(printed).toContain('rooms: [ { name: physics, capacity: 30 }, { name: maths } ]');
    const later = load(printed.replace('room-capacity: 7', 'room-capacity: 12'));
    expect(later.rooms).toEqual([
      { name: 'physics', capacity: 30, declaredCapacity: 30 },
      { name: 'maths', capacity: 12, declaredCapacity: undefined },
    ]);
  });

  it('names the line of a bad room', () => {
    const cases: [string, RegExp][] = [
      ['rooms: physics\n', /^config\.yaml:1: rooms: expected a list/],
      ['rooms:\n  - physics\n', /^config\.yaml:2: rooms: each room must be/],
      ['rooms:\n  - {capacity: 3}\n', /^config\.yaml:2: rooms: a room needs a name/],
      ['rooms:\n  - name: a b\n', /^config\.yaml:2: rooms: room name must not contain spaces/],
      ['rooms:\n  - name: x\n    capacity: 0\n', /^config\.yaml:3: rooms: capacity must be/],
      ['rooms:\n  - name: x\n    capacity: lots\n', /^config\.yaml:3: rooms: capacity must be/],
      ['rooms:\n  - name: x\n    colour: red\n', /^config\.yaml:3: rooms: unknown key "colour"/],
      ['rooms:\n  - name: Lobby\n', /^config\.yaml:2: rooms: Lobby: the lobby cannot be declared/],
      [
        'rooms:\n  - name: Physics\n  - name: phys\u0456cs\n',
        /^config\.yaml:3: rooms: phys\u0456cs: the same room as the one on line 2/,
      ],
    ];
    for (const [text, message] of cases) {
      expect(() => load(text)).toThrow(ConfigError);
      expect(() => load(text)).toThrow(message);
    }
  });

  it('round-trips declared rooms through --print-config', () => {
    const names = fc.uniqueArray(fc.stringMatching(/^[a-z][a-z0-9_-]{0,15}$/), {
      maxLength: 5,
      selector: (n) => n.replaceAll(/[il1]/g, 'l'),
    });
    fc.assert(
      fc.property(names, fc.option(fc.integer({ min: 1, max: 1_000_000 })), (list, capacity) => {
        fc.pre(!list.some((n) => n.replaceAll(/[il1]/g, 'l') === 'lobby'));
        // Every other room without a capacity of its own, when there is one.
        const entry = (n: string, i: number) =>
          capacity === null || i % 2 === 1
            ? `  - {name: "${n}"}`
            : `  - {name: "${n}", capacity: ${capacity}}`;
        const yaml = `rooms:\n${list.map(entry).join('\n')}\n`;
        const before = load(list.length === 0 ? '' : yaml);
        const printed = printConfig(before);
        const after = load(printed);
        expect(after).toEqual(before);
      }),
      { numRuns: 100 },
    );
  });

  it('turns any rooms value into rooms or a line-numbered ConfigError, nothing else', () => {
    const part = fc.oneof(
      fc.constantFrom(
        '- ',
        '  ',
        'name: ',
        'capacity: ',
        '{',
        '}',
        '[',
        ']',
        ',',
        ':',
        '"',
        '&a',
        '*a',
      ),
      fc.string({ maxLength: 6 }),
      fc.integer().map(String),
    );
    const value = fc
      .array(fc.tuple(part, fc.constantFrom('\n  ', ' ', '')), { maxLength: 10 })
      .map((parts) => parts.map(([p, sep]) => p + sep).join(''));
    fc.assert(
      fc.property(value, (text) => {
        try {
          load(`rooms: ${text}`);
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError);
          expect((err as Error).message).toMatch(/^config\.yaml:\d+(:\d+)?: /);
        }
      }),
      { numRuns: 500 },
    );
  });
});
