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

  it('sends "//word" lines with one "/" less, and other lines of slashes as they are', () => {
    expect(parseCommand('//join is a command')).toEqual({
      kind: 'chat',
      text: '/join is a command',
    });
    for (const text of [
      '/usr/bin is a path',
      '/ hello',
      '/',
      '/5 stars',
      ':/ sad',
      '/o\\',
      '// TODO: fix this',
      '//example.com/x',
      '///',
    ]) {
      expect(parseCommand(text)).toEqual({ kind: 'chat', text });
    }
  });

  it('takes a room named as IRC names channels, a tab after the word, and gives usage as typed', () => {
    expect(parseCommand('/join #physics')).toEqual({ kind: 'join', room: 'physics' });
    expect(parseCommand('\\part #physics')).toEqual({ kind: 'part', room: 'physics' });
    expect(parseCommand('/room #physics')).toEqual({ kind: 'room', room: 'physics' });
    expect(parseCommand('/join #')).toEqual({ kind: 'join', room: '#' });
    expect(parseCommand('/join\tphysics')).toEqual({ kind: 'join', room: 'physics' });
    expect(parseCommand('/msg bob')).toEqual({
      kind: 'invalid',
      message: 'Usage: /wh <nickname> <message>',
    });
    expect(parseCommand('\\msg bob')).toEqual({
      kind: 'invalid',
      message: 'Usage: \\wh <nickname> <message>',
    });
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

  it('sends every "//" line as chat, with one "/" less only before a word', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (rest) => {
        const word = /^[A-Za-z?]+(\s|$)/.test(rest);
        expect(parseCommand(`//${rest}`)).toEqual({
          kind: 'chat',
          text: word ? `/${rest}` : `//${rest}`,
        });
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
