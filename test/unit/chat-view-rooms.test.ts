import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { view } from '../../src/cli/chat-view.js';
import { HELP, parseCommand } from '../../src/protocol/slash-commands.js';

const plain = { color: false };
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what must not pass
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const at = new Date(2026, 0, 1, 9, 5);

describe('room commands', () => {
  it('parses \\join, \\leave or \\part, \\rooms and \\room', () => {
    expect(parseCommand('\\join physics')).toEqual({ kind: 'join', room: 'physics' });
    expect(parseCommand('\\join')).toMatchObject({ kind: 'invalid' });
    expect(parseCommand('\\join two words')).toEqual({
      kind: 'invalid',
      message: 'Room names cannot contain spaces. Usage: \\join <room>',
    });
    expect(parseCommand('\\leave physics')).toEqual({ kind: 'part', room: 'physics' });
    expect(parseCommand('\\part physics')).toEqual({ kind: 'part', room: 'physics' });
    expect(parseCommand('\\leave')).toEqual({ kind: 'part', room: undefined });
    expect(parseCommand('\\rooms')).toEqual({ kind: 'rooms' });
    expect(parseCommand('\\room maths')).toEqual({ kind: 'room', room: 'maths' });
    expect(parseCommand('\\room')).toMatchObject({ kind: 'invalid' });
    for (const word of ['\\join <room>', '\\leave [room]', '\\rooms', '\\room <room>'])
      expect(HELP).toContain(word);
  });

  it('tags lines from other rooms and shows the room in the prompt', () => {
    expect(view.chat(plain, at, 'bob', 'hi', 'physics')).toBe('09:05 [physics] bob: hi');
    expect(view.chat(plain, at, 'bob', 'hi')).toBe('09:05 bob: hi');
    expect(view.join(plain, at, 'bob', 2, 'physics')).toBe(
      '09:05 [physics] --> bob joined (2 users)',
    );
    expect(view.prompt(plain, 'ann', 'physics')).toBe('ann@physics> ');
    expect(view.prompt(plain, 'ann')).toBe('ann> ');
    expect(view.prompt(plain, 'ann', undefined, 0, true)).toBe('ann (reconnecting)> ');
    expect(view.prompt(plain, 'ann', 'physics', 3, true)).toBe(
      'ann@physics (reconnecting, 3 queued)> ',
    );
    expect(
      view.rooms(
        plain,
        [
          { room: 'lobby', userCount: 3, joined: true },
          { room: 'physics', userCount: 1, joined: false },
        ],
        'lobby',
      ),
    ).toBe('2 rooms:\n  lobby (3 users, joined, typing here)\n  physics (1 user)');
  });

  it('shows values whose conversion to text would throw (JSON can send {"toString": ""})', () => {
    const odd = JSON.parse('{"toString": "", "valueOf": ""}') as never;
    expect(view.joinedRoom(plain, 'lobby', [odd, 'ann'], false)).toContain('[object Object], ann');
    expect(view.join(plain, at, odd, odd, 'lobby')).toContain('(NaN users)');
    expect(
      view.rooms(plain, [{ room: odd, userCount: odd, joined: true }] as never, 'x'),
    ).toContain('[object Object]');
  });

  it('shows, never obeys, control characters in any room name or list a server sends', () => {
    const hostile = fc.string({ unit: 'binary', maxLength: 20 });
    fc.assert(
      fc.property(hostile, hostile, fc.anything(), (room, msg, list) => {
        const lines = [
          view.chat(plain, at, 'bob', msg, room),
          view.leave(plain, at, 'bob', 1, room),
          view.join(plain, at, 'bob', list as never, room),
          view.joinedRoom(plain, room, list, false),
          view.joinedRoom(plain, room, list, true),
          view.rooms(plain, list as never, room),
          view.prompt(plain, 'ann', room),
        ];
        for (const line of lines) expect(line.replaceAll('\n', '')).not.toMatch(CONTROL);
      }),
    );
  });
});
