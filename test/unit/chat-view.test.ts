import { describe, expect, it } from 'vitest';
import { nickColor, ordinal, view } from '../../src/cli/chat-view.js';

const ESC = '\x1b';

import { parseCommand } from '../../src/protocol/slash-commands.js';

describe('terminal client view', () => {
  it('parses the course client commands, and anything else as chat', () => {
    expect(parseCommand('hello \\there')).toEqual({ kind: 'chat', text: 'hello \\there' });
    expect(parseCommand('\\users')).toEqual({ kind: 'users' });
    expect(parseCommand('\\wh bob see you  later')).toEqual({
      kind: 'whisper',
      to: 'bob',
      text: 'see you  later',
    });
    expect(parseCommand('\\wh bob')).toMatchObject({ kind: 'invalid' });
    expect(parseCommand('\\rename anna')).toEqual({ kind: 'rename', nickname: 'anna' });
    expect(parseCommand('\\rename')).toMatchObject({ kind: 'invalid' });
    expect(parseCommand('\\rtt')).toEqual({ kind: 'rtt' });
    expect(parseCommand('\\version')).toEqual({ kind: 'version' });
    expect(parseCommand('\\exit')).toEqual({ kind: 'exit' });
    expect(parseCommand('\\help')).toEqual({ kind: 'help' });
    expect(parseCommand('   ')).toEqual({ kind: 'empty' });
    expect(parseCommand('\\dance')).toEqual({
      kind: 'invalid',
      message:
        'Unknown command \\dance. Type \\help for the list, or start the line with a space to send it as chat.',
    });
  });

  it('gives each nickname a stable color, the same in any letter case', () => {
    expect(nickColor('ann')).toBe(nickColor('ann'));
    expect(nickColor('ANN')).toBe(nickColor('ann'));
    const colors = new Set(['ann', 'bob', 'cat', 'dan', 'eve', 'fay', 'gus'].map(nickColor));
    expect(colors.size).toBeGreaterThan(2);
  });

  it('writes ordinals the way people read them', () => {
    expect([1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111].map(ordinal)).toEqual([
      '1st',
      '2nd',
      '3rd',
      '4th',
      '11th',
      '12th',
      '13th',
      '21st',
      '22nd',
      '101st',
      '111th',
    ]);
  });

  it("shows a recovered chat's date when it was said on another day than today", () => {
    const at = new Date(2026, 0, 1, 9, 5);
    const plain = { color: false };
    const later = new Date(2026, 0, 3, 8, 0);
    expect(view.chat(plain, at, 'bob', 'hi', undefined, false, 'ann', later)).toBe(
      '2026-01-01 09:05 bob: hi',
    );
    expect(
      view.chat(plain, at, 'bob', 'hi', 'physics', true, 'ann', new Date(2026, 0, 1, 23)),
    ).toBe('09:05 [physics] * bob hi');
  });

  it('uses escape codes only when color is on', () => {
    const at = new Date(2026, 0, 1, 9, 5);
    expect(view.chat({ color: false }, at, 'ann', 'hi')).toBe('09:05 ann: hi');
    expect(view.chat({ color: true }, at, 'ann', 'hi')).toContain('\x1b[');
    expect(view.whisperIn({ color: false }, at, 'bob', 'psst')).toBe('09:05 (whisper) bob: psst');
    expect(view.leave({ color: false }, at, 'bob', 1)).toBe('09:05 <-- bob left (1 user)');
  });

  it('shows in the prompt characters readline measures otherwise than terminals draw as "?"', () => {
    // A nickname a hostile server answers with, or a room a member made.
    const ri = '\u{1f1fa}\u{1f1f8}';
    expect(view.prompt({ color: false }, `v${ri}`)).toBe('v??> ');
    expect(view.prompt({ color: false }, 'ann', `\u2630x${ri}`)).toBe('ann@?x??> ');
    // Names of one width everywhere are left as they are.
    expect(view.prompt({ color: false }, 'zoë', '李')).toBe('zoë@李> ');
  });

  it("marks someone else's chat that names the reader, in color only", () => {
    const at = new Date(2026, 0, 1, 9, 5);
    const color = { color: true };
    const marked = '\x1b[1;4mAnn, look\x1b[0m';
    expect(view.chat(color, at, 'bob', 'Ann, look', undefined, false, 'ann')).toContain(marked);
    expect(view.chat(color, at, 'bob', 'annual', undefined, false, 'ann')).not.toContain(
      '\x1b[1;4m',
    );
    // Its own lines, and lines without color, are not marked.
    expect(view.chat(color, at, 'ann', 'ann here', undefined, false, 'ann')).not.toContain(
      '\x1b[1;4m',
    );
    expect(view.chat({ color: false }, at, 'bob', 'hi ann', undefined, false, 'ann')).toBe(
      '09:05 bob: hi ann',
    );
    // Marked, what the peer sent is still shown, not obeyed.
    expect(view.chat(color, at, 'bob', 'ann\x1b[2J', undefined, true, 'ann')).toContain(
      '\x1b[1;4mann^[[2J\x1b[0m',
    );
  });

  it('shows what peers send instead of letting the terminal obey it, and keeps its own colors', () => {
    const at = new Date(2026, 0, 1, 9, 5);
    const plain = { color: false };
    const evil = 'hi\r\x1b[2K12:00 bob: give me your password\x1b]0;owned\x07\x1b[6n\u009b6n\u202e';
    const shown = 'hi^M^[[2K12:00 bob: give me your password^[]0;owned^G^[[6n<U+009B>6n<U+202E>';
    expect(view.chat(plain, at, 'eve\x1b[8m', evil)).toBe(`09:05 eve^[[8m: ${shown}`);
    expect(view.whisperIn(plain, at, 'eve', 'a\nb')).toBe('09:05 (whisper) eve: a^Jb');
    expect(view.join(plain, at, 'e\bve', 2)).toBe('09:05 --> e^Hve joined (2 users)');
    expect(view.rename(plain, at, 'eve', 'bob\u202e')).toBe(
      '09:05 -- eve is now known as bob<U+202E>',
    );
    expect(view.error(plain, 'Refused: unknown command "\x1b[6n".')).toBe(
      'Refused: unknown command "^[[6n".',
    );
    expect(
      view.users(plain, [
        ['eve\x1b[31m', '10.0.0.1\x1b]2;x\x07', 1],
        ['bob', '::1', '\x9b6n' as unknown as number],
      ]),
    ).toBe('2 users in the room:\n  eve^[[31m 10.0.0.1^[]2;x^G:1\n  bob ::1:<U+009B>6n');
    expect(view.users(plain, [['eve', 'hidden', 0]])).toBe('1 user in the room:\n  eve hidden');
    // A server that sends something else than a list of entries still cannot break out.
    expect(view.users(plain, [7, null] as unknown as [string, string, number][])).toBe(
      // Fields left out are no text ("undefined" was shown); a member without a name is "?".
      '2 users in the room:\n  7 :\n  ? :',
    );
    expect(view.prompt(plain, 'x\x1b[6n')).toBe('x^[[6n> ');
    expect(view.welcome(plain, ['1.2.3.4\x1b[6n', 5], 'ann', '3\x1b[6n' as unknown as number)).toBe(
      'Connected to 1.2.3.4^[[6n:5 as ann. You are the NaNth user.\nType \\help for commands.',
    );

    // Colors are added after escaping: the only ESC bytes are the client's own SGR codes.
    const colored = view.chat({ color: true }, at, 'eve', evil);
    const sgr = new RegExp(`${ESC}\\[[0-9;]*m`, 'g');
    expect(colored.match(sgr)?.length).toBeGreaterThan(0);
    expect(colored.replace(sgr, '')).toBe(`09:05 eve: ${shown}`);
  });
});
