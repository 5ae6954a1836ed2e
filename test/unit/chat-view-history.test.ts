import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { view } from '../../src/cli/chat-view.js';
import { HELP, parseCommand } from '../../src/protocol/slash-commands.js';

const plain = { color: false };
const color = { color: true };
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what must not pass
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const today = new Date(2026, 0, 2, 18, 0);

describe('history in the terminal client', () => {
  it('parses \\history [n]', () => {
    expect(parseCommand('\\history')).toEqual({ kind: 'history', count: 20 });
    expect(parseCommand('\\history 5')).toEqual({ kind: 'history', count: 5 });
    expect(parseCommand('\\history 100')).toEqual({ kind: 'history', count: 100 });
    for (const bad of [
      '\\history 0',
      '\\history 101',
      '\\history x',
      '\\history -3',
      '\\history 1e2',
    ])
      expect(parseCommand(bad)).toMatchObject({ kind: 'invalid' });
    expect(HELP).toContain('\\history [n]');
  });

  it('marks stored messages, with their own time and a date unless today, dimmed as a whole', () => {
    const earlier = new Date(2026, 0, 2, 9, 5);
    expect(view.history(plain, earlier, 'bob', 'hi', undefined, today)).toBe(
      '09:05 (history) bob: hi',
    );
    expect(view.history(plain, new Date(2025, 11, 31, 23, 59), 'bob', 'hi', 'physics', today)).toBe(
      '2025-12-31 23:59 [physics] (history) bob: hi',
    );
    expect(view.history(plain, new Date(Number.NaN), 'bob', 'hi', undefined, today)).toBe(
      '--:-- (history) bob: hi',
    );
    const dim = view.history(color, earlier, 'bob', 'hi', undefined, today);
    expect(dim).toBe('\x1b[2m09:05 (history) bob: hi\x1b[0m');
  });

  it('shows a recovered chat as chat after a short absence, and as history past a minute', () => {
    const said = (msAgo: number, room?: string) =>
      view.recovered(
        plain,
        new Date(today.getTime() - msAgo),
        'bob',
        'hi ann',
        room,
        false,
        'ann',
        today,
      );
    expect(said(5_000)).toBe('17:59 bob: hi ann');
    expect(said(60_000, 'physics')).toBe('17:59 [physics] bob: hi ann');
    expect(said(60_001)).toBe('17:58 (history) bob: hi ann');
    expect(said(24 * 3600_000, 'physics')).toBe('2026-01-01 18:00 [physics] (history) bob: hi ann');
    // A server's time that is none, or an hour ahead, is not shown as live chat either.
    expect(said(-3600_000)).toBe('19:00 (history) bob: hi ann');
    expect(said(Number.NaN)).toBe('--:-- (history) bob: hi ann');
    expect(said(-60_000)).toBe('18:01 bob: hi ann');
    // As history, dimmed whole; a mention of the reader is underlined too.
    const old = new Date(today.getTime() - 3600_000);
    expect(view.recovered(color, old, 'bob', 'hi ann', undefined, true, 'ann', today)).toBe(
      '\x1b[2m17:00 (history) * bob \x1b[0m\x1b[2;4mhi ann\x1b[0m',
    );
    expect(view.recovered(color, old, 'bob', 'hi all', undefined, false, 'ann', today)).toBe(
      '\x1b[2m17:00 (history) bob: hi all\x1b[0m',
    );
    // Stored on join too; not the reader's own words.
    expect(view.history(color, old, 'bob', 'ann?', undefined, today, false, 'ann')).toBe(
      '\x1b[2m17:00 (history) bob: \x1b[0m\x1b[2;4mann?\x1b[0m',
    );
    expect(view.history(color, old, 'ann', 'I am ann', undefined, today, false, 'ann')).toBe(
      '\x1b[2m17:00 (history) ann: I am ann\x1b[0m',
    );
  });

  it('says why a gap was not recovered, for every reason the server gives', () => {
    expect(view.gap(plain, 'lobby', 'epoch')).toBe(
      "Messages in lobby may be missing: the server's stored history was reset or restored.",
    );
    expect(view.gap(plain, 'physics', 'too-many')).toContain('\\history loads older ones');
    for (const reason of ['ahead', 'deleted', 'off'])
      expect(view.gap(plain, 'r', reason)).not.toContain('undefined');
    expect(view.gap(plain, 'r', undefined)).toBe(
      'Messages in r may be missing: the server did not say why.',
    );
    expect(view.reconnecting(plain, 1, 10, 250)).toBe(
      'Connection lost. Reconnecting in 0.3 s (attempt 1 of 10)...',
    );
    expect(view.reconnecting(plain, 2, 10, 500)).toBe('Reconnecting in 0.5 s (attempt 2 of 10)...');
    expect(view.reconnected(plain, 'ann', true)).toBe('Reconnected as ann.');
  });

  it('never lets a stored message, room, nickname or reason reach the terminal as a control sequence', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'binary' }),
        fc.string({ unit: 'binary' }),
        fc.string({ unit: 'binary' }),
        fc.string({ unit: 'binary' }),
        (from, msg, room, reason) => {
          for (const style of [plain, color]) {
            const lines = [
              view.history(style, today, from, msg, room, today),
              view.gap(style, room, reason),
              view.reconnected(style, from, false),
            ];
            for (const line of lines) {
              // Only the client's own SGR sequences may carry ESC.
              // biome-ignore lint/suspicious/noControlCharactersInRegex: ESC is what is stripped
              const stripped = line.replace(/\x1b\[[0-9;]*m/g, '');
              expect(stripped).not.toMatch(CONTROL);
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
