import { beforeEach, describe, expect, it } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import { MemoryPresence } from '../../../src/core/memory-presence.js';
import { lookupKey, MAX_LOOKUP_LENGTH } from '../../../src/core/nickname.js';
import { ErrorCode } from '../../../src/protocol/codes.js';
import { joinChat, sendRequest as send } from '../../helpers/fake-peer.js';

/**
 * WHISPER's `to`, KICK's `nickname` and the `room` of CHAT, USERS, PART and a
 * CONNECT's `since` are looked up by look-alike key, and folding a string
 * costs time by its length times its expansion: U+FDFA folds to 18
 * characters, so one 63 KB frame of them made a 378,000-character key, some
 * 6 ms of the event loop per request (about five times what decoding and
 * parsing that frame cost) and, on a cluster, a 630 KB argument to Redis
 * (ten times the bytes the client sent). No nickname (32 characters) or room
 * name (64) is spelled in more than MAX_LOOKUP_LENGTH: a longer name is
 * nobody, unfolded.
 */

let chat: Chat;
const connect = (nickname: string, caps?: string[]) => joinChat(chat, nickname, caps);

/** 21,000 U+FDFA: 63,000 bytes of UTF-8, a frame under --max-frame. */
const EXPANDING = '\ufdfa'.repeat(21_000);

beforeEach(() => {
  chat = new Chat({ maxUsers: 10 });
});

describe('names too long to be anyone', () => {
  it('are nobody: a whisper to one is "20", even if it folds to a member', () => {
    connect('ann');
    const eve = connect('eve');
    eve.take();
    // Folded, this is "ann": zero-width spaces are ignorable. Too long to be looked up.
    send(eve, { cmd: '2', to: `ann${'\u200b'.repeat(MAX_LOOKUP_LENGTH)}`, msg: 'hi' });
    expect(eve.take()).toEqual([{ cmd: '20' }]);
    // A long spelling within the bound still reaches her.
    send(eve, { cmd: '2', to: `ann${'\u200b'.repeat(100)}`, msg: 'hi' });
    expect(eve.take()).toEqual([{ cmd: '22' }]);
  });

  it('are no room: a chat to one is refused, even if it folds to the lobby', () => {
    const eve = connect('eve', ['errors', 'rooms']);
    eve.take();
    send(eve, { cmd: '7', msg: 'hi', room: `lobby${'\u200b'.repeat(MAX_LOOKUP_LENGTH)}` });
    expect(eve.take()).toMatchObject([{ cmd: '90', code: ErrorCode.NOT_IN_ROOM }]);
    // A long spelling within the bound is still the lobby.
    send(eve, { cmd: '7', msg: 'hi', room: `lobby${'\u200b'.repeat(100)}` });
    expect(eve.take()).toEqual([]);
  });

  it('are not folded: a hundred whispers and room requests naming them are answered as for nobody', () => {
    // Folding is what cost the time (some 600 ms for these); the key is never made.
    expect(lookupKey(EXPANDING)).toBeUndefined();
    expect(lookupKey('a'.repeat(MAX_LOOKUP_LENGTH + 1))).toBeUndefined();
    expect(lookupKey('A'.repeat(MAX_LOOKUP_LENGTH))).toBe('a'.repeat(MAX_LOOKUP_LENGTH));
    const eve = connect('eve', ['errors', 'rooms']);
    eve.take();
    for (let i = 0; i < 25; i++) {
      send(eve, { cmd: '2', to: EXPANDING, msg: 'hi' });
      send(eve, { cmd: '7', msg: 'hi', room: EXPANDING });
      send(eve, { cmd: '1', room: EXPANDING });
      send(eve, { cmd: '102', room: EXPANDING });
    }
    const replies = eve.take();
    expect(replies).toHaveLength(100);
    expect(replies.filter((r) => (r as { cmd: string }).cmd === '20')).toHaveLength(25);
    expect(
      replies.filter((r) => (r as { code?: number }).code === ErrorCode.NOT_IN_ROOM),
    ).toHaveLength(75);
  });

  it('are nobody to Presence either (what a cluster asks Redis)', async () => {
    const presence = new MemoryPresence();
    expect(await presence.claim('1', 'ann', { ip: '127.0.0.1', port: 1 })).toBe(true);
    expect(await presence.find(`ann${'\u200b'.repeat(100)}`)).toMatchObject({ nickname: 'ann' });
    expect(await presence.find(`ann${'\u200b'.repeat(MAX_LOOKUP_LENGTH)}`)).toBeUndefined();
  });
});
