import fc from 'fast-check';
import { expect, it } from 'vitest';
import { newSender, newToken, senderOf } from '../../../src/core/resume-token.js';

it('reads back the sender a token was made with, and a new secret each time', () => {
  const sender = newSender();
  const tokens = new Set<string>();
  for (let i = 0; i < 100; i++) {
    const token = newToken(sender);
    expect(senderOf(token)).toBe(sender);
    tokens.add(token);
  }
  expect(tokens.size).toBe(100);
  expect(newSender()).not.toBe(sender);
});

it('finds no sender in a string that is not such a token', () => {
  const token = newToken(newSender());
  for (const other of [
    '',
    token.slice(1),
    `${token}A`,
    `${token.slice(0, -1)}.`,
    // A token of the form before tokens carried a sender: 24 characters.
    token.slice(0, 24),
  ]) {
    expect(senderOf(other)).toBeUndefined();
  }
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string({ maxLength: 64, unit: 'binary' }),
        fc.stringMatching(/^[A-Za-z0-9_-]{34,38}$/),
        fc.stringMatching(/^[A-Za-z0-9_-]{35}[^A-Za-z0-9_-]$/),
      ),
      (text) => {
        const wellFormed = /^[A-Za-z0-9_-]{36}$/.test(text);
        expect(senderOf(text)).toBe(wellFormed ? text.slice(0, 12) : undefined);
      },
    ),
  );
});
