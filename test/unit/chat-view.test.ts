import { describe, expect, it } from 'vitest';
import { nickColor, ordinal, view } from '../../src/cli/chat-view.js';
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
      message: 'Unknown command \\dance. Type \\help for the list.',
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

  it('uses escape codes only when color is on', () => {
    const at = new Date(2026, 0, 1, 9, 5);
    expect(view.chat({ color: false }, at, 'ann', 'hi')).toBe('09:05 ann: hi');
    expect(view.chat({ color: true }, at, 'ann', 'hi')).toContain('\x1b[');
    expect(view.whisperIn({ color: false }, at, 'bob', 'psst')).toBe('09:05 (whisper) bob: psst');
    expect(view.leave({ color: false }, at, 'bob', 1)).toBe('09:05 * bob left (1 user)');
  });
});
