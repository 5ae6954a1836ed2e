import { describe, expect, it } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import { lookupKey, MAX_LOOKUP_LENGTH } from '../../../src/core/nickname.js';
import { connectWith, joinChat, sendRequest as send } from '../../helpers/fake-peer.js';

/**
 * Names a client sends to be looked up (WHISPER's `to`, the `room` of CHAT,
 * USERS, PART and HISTORY, each `since` of a CONNECT) are folded up to
 * MAX_LOOKUP_LENGTH characters, and folding brings them to NFD, which
 * reorders a run of combining marks in time by the square of its length: a
 * 1,024-character name of "a" and alternating marks of classes 230 and 220
 * took some 1.3 ms to fold, six times the 1,024 U+FDFA that the bound was set
 * by, and a CONNECT with 30 such `since` entries (62 KB, under --max-frame)
 * some 30 ms of the event loop, against 2 ms for a plain one: one address's
 * connections, each connecting again after its "03", held the server. No
 * permitted name, in any spelling, holds such a run; the one that costs most
 * should be one of the ordinary worst case, U+FDFA.
 */

const LENGTH = MAX_LOOKUP_LENGTH;
/** "a", then marks of classes 230 and 220 alternating: the run NFD must sort. */
const MARKS = `a${'\u0301\u0316'.repeat((LENGTH - 2) / 2)}b`;
/** U+FDFA folds to 18 characters: what MAX_LOOKUP_LENGTH was measured against. */
const EXPANDING = '\ufdfa'.repeat(LENGTH);

/** Milliseconds `run` takes, the least of five tries (the machine's noise taken out). */
function timed(run: () => void): number {
  let least = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    run();
    least = Math.min(least, performance.now() - started);
  }
  return least;
}

describe('names of long runs of combining marks, looked up', () => {
  it('are within the bound, and nobody', () => {
    expect(MARKS).toHaveLength(LENGTH);
    expect(EXPANDING).toHaveLength(LENGTH);
    const chat = new Chat({ maxUsers: 10 });
    joinChat(chat, 'ann');
    const eve = joinChat(chat, 'eve');
    eve.take();
    send(eve, { cmd: '2', to: MARKS, msg: 'hi' });
    expect(eve.take()).toEqual([{ cmd: '20' }]);
  });

  it('cost no more to fold than the longest expansion', () => {
    const folds = (name: string) => () => {
      for (let i = 0; i < 50; i++) lookupKey(name);
    };
    const expanding = timed(folds(EXPANDING));
    const marks = timed(folds(MARKS));
    expect(marks).toBeLessThan(2 * expanding);
  });

  it('make a CONNECT with 30 of them in `since` cost no more than one of U+FDFA names', () => {
    const chat = new Chat({ maxUsers: 1000 });
    let n = 0;
    const connects = (name: string) => () => {
      for (let i = 0; i < 10; i++) {
        const since = Array.from({ length: 30 }, () => ({ room: name, epoch: 'e', id: 1 }));
        const peer = connectWith(chat, {
          cmd: '0',
          nickname: `eve${n++}`,
          caps: ['rooms', 'history'],
          since,
        });
        send(peer, { cmd: '3' });
      }
    };
    const expanding = timed(connects(EXPANDING));
    const marks = timed(connects(MARKS));
    expect(marks).toBeLessThan(2 * expanding);
  });
});
