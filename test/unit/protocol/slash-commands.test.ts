import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseCommand } from '../../../src/protocol/slash-commands.js';

describe('commands written as in IRC', () => {
  it('takes "/" for "\\" before a command word, IRC names included', () => {
    expect(parseCommand('/join physics')).toEqual({ kind: 'join', room: 'physics' });
    expect(parseCommand('/JOIN physics')).toEqual({ kind: 'join', room: 'physics' });
    expect(parseCommand('/msg bob see you')).toEqual({
      kind: 'whisper',
      to: 'bob',
      text: 'see you',
    });
    expect(parseCommand('/nick anna')).toEqual({ kind: 'rename', nickname: 'anna' });
    expect(parseCommand('/list')).toEqual({ kind: 'rooms' });
    expect(parseCommand('/names')).toEqual({ kind: 'users' });
    expect(parseCommand('/quit')).toEqual({ kind: 'exit' });
    expect(parseCommand('/?')).toEqual({ kind: 'help' });
    expect(parseCommand('\\nick anna')).toEqual({ kind: 'rename', nickname: 'anna' });
  });

  it('does not send an unknown "/" command as chat, and says how to', () => {
    expect(parseCommand('/me waves')).toEqual({
      kind: 'invalid',
      message:
        'Unknown command /me. Type /help for the list, or start the line with // to send it as chat.',
    });
    expect(parseCommand('\\me waves')).toEqual({
      kind: 'invalid',
      message: 'Unknown command \\me. Type \\help for the list.',
    });
  });

  it('sends "//" lines with one "/" less, and a "/" before no word as it is', () => {
    expect(parseCommand('//join is a command')).toEqual({
      kind: 'chat',
      text: '/join is a command',
    });
    for (const text of ['/usr/bin is a path', '/ hello', '/', '/5 stars', ':/ sad', '/o\\']) {
      expect(parseCommand(text)).toEqual({ kind: 'chat', text });
    }
  });

  it('leaves every line starting with neither "/" nor "\\" as chat, unchanged', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'grapheme', maxLength: 40 }).filter((t) => t.trim() !== ''),
        (text) => {
          fc.pre(!text.startsWith('/') && !text.startsWith('\\'));
          expect(parseCommand(text)).toEqual({ kind: 'chat', text });
        },
      ),
    );
  });

  it('sends every "//" line as chat with one "/" less', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (rest) => {
        expect(parseCommand(`//${rest}`)).toEqual({ kind: 'chat', text: `/${rest}` });
      }),
    );
  });

  it('parses "/word …" as "\\word …" would, for any word of letters and any arguments', () => {
    const word = fc.stringMatching(/^[A-Za-z?]{1,8}$/);
    fc.assert(
      fc.property(word, fc.string({ maxLength: 30 }), (w, args) => {
        const slashed = parseCommand(`/${w} ${args}`);
        const backslashed = parseCommand(`\\${w} ${args}`);
        expect(slashed.kind).toBe(backslashed.kind);
        if (slashed.kind !== 'invalid') expect(slashed).toEqual(backslashed);
      }),
    );
  });
});
