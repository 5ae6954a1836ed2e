import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseCommand, partRefused } from '../../../src/protocol/slash-commands.js';

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
    expect(parseCommand('/me waves at  everyone ')).toEqual({
      kind: 'action',
      text: 'waves at  everyone ',
    });
    expect(parseCommand('\\me  ')).toEqual({
      kind: 'invalid',
      message: 'Usage: \\me <what you do>',
    });
  });

  it('does not send an unknown "/" command as chat, and says how to', () => {
    expect(parseCommand('/shrug well')).toEqual({
      kind: 'invalid',
      message:
        'Unknown command /shrug. Type /help for the list, or start the line with a space to send it as chat.',
    });
    expect(parseCommand('\\shrug well')).toEqual({
      kind: 'invalid',
      message:
        'Unknown command \\shrug. Type \\help for the list, or start the line with a space to send it as chat.',
    });
    // Words of any script: "/оper" (a Cyrillic "о") is no chat with a password in it.
    for (const line of ['/оper admin hunter2', '/opér admin hunter2', '/café au lait']) {
      expect(parseCommand(line)).toMatchObject({ kind: 'invalid' });
    }
    expect(parseCommand(' /shrug well')).toEqual({ kind: 'chat', text: ' /shrug well' });
  });

  it('refuses /part of no room joined with a reason, guessing neither a reason nor a typo', () => {
    const joined = (room: string) => ['lobby', 'physics'].includes(room);
    const part = (line: string) => parseCommand(line) as { room?: string; reason?: string };
    expect(partRefused(part('/part see you'), joined)).toMatch(/^You are not in see\. /);
    expect(partRefused(part('/part phsyics bye'), joined)).toMatch(/^You are not in phsyics\. /);
    for (const line of ['/part', '/part physics', '/part #physics bye', '/part nowhere'])
      expect(partRefused(part(line), joined), line).toBeUndefined();
  });

  it('sends a line of "\\" and no command word as chat', () => {
    for (const line of ['\\o/', '\\o/ we won', '\\_(ツ)_/', '\\', '\\\\', '\\3 < 4', '\\ hi']) {
      expect(parseCommand(line), line).toEqual({ kind: 'chat', text: line });
    }
    expect(parseCommand('\\o')).toMatchObject({ kind: 'invalid' });
    expect(parseCommand('\\users')).toEqual({ kind: 'users' });
  });

  it('takes a zero-width space after the word for a space', () => {
    expect(parseCommand('/oper\u200B admin hunter3')).toEqual({
      kind: 'oper',
      name: 'admin',
      password: 'hunter3',
    });
  });

  it('refuses the name of a command after a look-alike of "/", and sends other such lines', () => {
    for (const slash of ['\uFF0F', '\u2215', '\u2044']) {
      expect(parseCommand(`${slash}oper admin hunter2`)).toMatchObject({ kind: 'invalid' });
      expect(parseCommand(`${slash}JOIN physics`)).toMatchObject({ kind: 'invalid' });
    }
    for (const text of ['\uFF0F笑', '\uFF0F(^o^)\uFF3C', '\u2215 half']) {
      expect(parseCommand(text)).toEqual({ kind: 'chat', text });
    }
  });

  it('sends "//" before the name of a command with one "/" less, and other lines of slashes as they are', () => {
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
      '// TODO: fix this',
      '//TODO fix this',
      '//noinspection JSUnusedGlobalSymbols',
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
    expect(parseCommand('/join #a,#b')).toEqual({
      kind: 'invalid',
      message: 'Join one room at a time. Usage: /join <room>',
    });
    expect(parseCommand('/join\tphysics')).toEqual({ kind: 'join', room: 'physics' });
    expect(parseCommand('/names #physics')).toEqual({ kind: 'users', room: 'physics' });
    expect(parseCommand('\\users')).toEqual({ kind: 'users' });
    expect(parseCommand('/names a b')).toEqual({
      kind: 'invalid',
      message: 'Usage: /names [room]',
    });
    expect(parseCommand('/part #physics see you all')).toEqual({
      kind: 'part',
      room: 'physics',
      reason: 'see you all',
    });
    expect(parseCommand('/quit  gone fishing ')).toEqual({ kind: 'exit', message: 'gone fishing' });
    expect(parseCommand('/quit')).toEqual({ kind: 'exit' });
    expect(parseCommand('/msg bob')).toEqual({
      kind: 'invalid',
      message: 'Usage: /msg <nickname> <message>',
    });
    expect(parseCommand('\\msg bob')).toEqual({
      kind: 'invalid',
      message: 'Usage: \\msg <nickname> <message>',
    });
    expect(parseCommand('/nick')).toEqual({ kind: 'invalid', message: 'Usage: /nick <nickname>' });
    expect(parseCommand('\\rename')).toEqual({
      kind: 'invalid',
      message: 'Usage: \\rename <nickname>',
    });
  });

  it('leaves every line starting with neither "/" nor "\\" as chat, unchanged', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'grapheme', maxLength: 40 }).filter((t) => t.trim() !== ''),
        (text) => {
          fc.pre(!/^[/\\\uFF0F\u2215\u2044]/.test(text));
          expect(parseCommand(text)).toEqual({ kind: 'chat', text });
        },
      ),
    );
  });

  it('sends every "//" line as chat, with one "/" less only before the name of a command', () => {
    const names =
      'users names wh whisper msg rename nick rtt version join leave part rooms list room history help ? exit quit oper kick ban unban bans'.split(
        ' ',
      );
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom(...names)), (rest) => {
        const word = /^([A-Za-z?]+)(\s|$)/.exec(rest)?.[1]?.toLowerCase();
        const command = word !== undefined && names.includes(word);
        expect(parseCommand(`//${rest}`)).toEqual({
          kind: 'chat',
          text: command ? `/${rest}` : `//${rest}`,
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
