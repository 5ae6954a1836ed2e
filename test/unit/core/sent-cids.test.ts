import { expect, it } from 'vitest';
import { MAX_SENT_CIDS, SentCids } from '../../../src/core/sent-cids.js';

it('gives the name a cid was first sent under, per room', () => {
  const sent = new SentCids();
  expect(sent.firstSender('lobby', 'c1', 'ann')).toBe('ann');
  expect(sent.firstSender('lobby', 'c1', 'anna')).toBe('ann');
  expect(sent.firstSender('physics', 'c1', 'anna')).toBe('anna');
  expect(sent.firstSender('lobby', 'c2', 'anna')).toBe('anna');
  // Room and cid are not simply joined: ("ab", "c") is not ("a", "bc").
  expect(sent.firstSender('ab', 'c', 'ann')).toBe('ann');
  expect(sent.firstSender('a', 'bc', 'anna')).toBe('anna');
});

it(`remembers the newest ${MAX_SENT_CIDS} cids only`, () => {
  const sent = new SentCids();
  for (let i = 0; i < MAX_SENT_CIDS; i++) sent.firstSender('lobby', `c${i}`, 'ann');
  expect(sent.firstSender('lobby', 'c0', 'anna')).toBe('ann');
  expect(sent.size).toBe(MAX_SENT_CIDS);
  sent.firstSender('lobby', 'new', 'anna');
  expect(sent.size).toBe(MAX_SENT_CIDS);
  // The oldest went first: c0 is forgotten, c1 is still known.
  expect(sent.firstSender('lobby', 'c1', 'anna')).toBe('ann');
  expect(sent.firstSender('lobby', 'c0', 'anna')).toBe('anna');
});
