import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import { lookalikeKey } from '../../../src/core/lookalike.js';
import {
  checkNickname,
  lookupKey,
  MAX_LOOKUP_LENGTH,
  MAX_MARKS_IN_A_ROW,
  nicknameKey,
  nicknameLookupKey,
} from '../../../src/core/nickname.js';
import { checkRoomName } from '../../../src/core/rooms.js';
import { hashPassword, MAX_PASSWORD_LENGTH, verifyPassword } from '../../../src/password.js';
import { ErrorCode } from '../../../src/protocol/codes.js';
import { connectWith, joinChat, sendRequest as send } from '../../helpers/fake-peer.js';

/**
 * NFC and NFD sort a run of combining marks in time by the square of its
 * length (canonical ordering): one frame of "a" and 30,000 marks of two
 * classes, alternating, held the event loop some 600 ms as a nickname or room
 * name and 700 ms as an OPER password, and a looked-up name (WHISPER's `to`,
 * a CHAT's `room`, each `since` of a CONNECT) of 1,000 such marks about 1 ms
 * to fold, thirty to a CONNECT. Nothing a client sends may be normalised with
 * more than 32 marks in a row: names people may take hold at most 8 (NFC), and
 * a longer run is nobody, unnormalised. Each test counts what reaches
 * `String.prototype.normalize`, so none depends on the machine's speed.
 */

const MOST = 32;
const MARK = /\p{M}/u;

/** The most marks in a row in `text` (code points). */
function longestRun(text: string): number {
  let longest = 0;
  let run = 0;
  for (const ch of text) {
    run = MARK.test(ch) ? run + 1 : 0;
    longest = Math.max(longest, run);
  }
  return longest;
}

/** The longest run of marks in any string normalised while `run` ran, and how many were. */
function normalised(run: () => void): { longest: number; calls: number } {
  const original = String.prototype.normalize;
  let longest = 0;
  let calls = 0;
  const spy = vi.spyOn(String.prototype, 'normalize').mockImplementation(function (
    this: string,
    form?: string,
  ) {
    calls++;
    longest = Math.max(longest, longestRun(String(this)));
    return original.call(this, form);
  });
  try {
    run();
  } finally {
    spy.mockRestore();
  }
  return { longest, calls };
}

/** "a", then `n` marks of classes 230 and 220 alternating: the run canonical ordering sorts. */
const marks = (n: number) => `a${'\u0301\u0316'.repeat(n / 2)}`;
/** 60 KB of UTF-8: a frame under --max-frame. */
const FRAME = marks(30_000);

describe('names with long runs of combining marks', () => {
  it('are refused before they are normalised: nicknames and room names of a frame of them', () => {
    const seen = normalised(() => {
      expect(checkNickname(FRAME)).toEqual({
        ok: false,
        reason: 'nickname is longer than 32 characters',
      });
      expect(checkRoomName(FRAME)).toMatchObject({ ok: false });
      // Within the length a name may be sent in, but more marks in a row than any
      // spelling of a name people may take.
      expect(checkRoomName(marks(500))).toEqual({
        ok: false,
        reason: `room name must not contain more than ${MAX_MARKS_IN_A_ROW} combining marks in a row`,
      });
    });
    expect(seen.longest).toBeLessThanOrEqual(MOST);
  });

  it('are refused as RENAME, JOIN_ROOM and CONNECT, normalising no long run', () => {
    const chat = new Chat({ maxUsers: 10 });
    const seen = normalised(() => {
      const eve = joinChat(chat, 'eve', ['errors', 'rooms']);
      eve.take();
      send(eve, { cmd: '5', newNickname: FRAME });
      expect(eve.take()).toMatchObject([{ cmd: '90', code: ErrorCode.INVALID_NICKNAME }]);
      send(eve, { cmd: '100', room: FRAME });
      expect(eve.take()).toMatchObject([{ cmd: '90', code: ErrorCode.INVALID_ROOM_NAME }]);
      const course = joinChat(chat, 'course');
      course.take();
      send(course, { cmd: '5', newNickname: FRAME });
      expect(course.take()).toEqual([{ cmd: '50' }]);
      const late = connectWith(chat, { cmd: '0', nickname: FRAME });
      expect(late.take()).toEqual([{ cmd: '01' }]);
    });
    expect(seen.longest).toBeLessThanOrEqual(MOST);
  });

  it('are nobody when looked up, unnormalised, also when only folding makes the run', () => {
    const chat = new Chat({ maxUsers: 10 });
    joinChat(chat, 'ann');
    const named = [
      marks(MAX_LOOKUP_LENGTH - 2),
      // Zero-width spaces are dropped by folding: the runs between them join.
      `a${'\u0301\u0316\u200b'.repeat(340)}`,
      // U+309B and U+309C are symbols that fold to the marks U+3099 and U+030A.
      `a${'\u309b\u309c'.repeat(500)}`,
    ];
    const seen = normalised(() => {
      const eve = joinChat(chat, 'eve', ['errors', 'rooms']);
      eve.take();
      for (const name of named) {
        expect(lookupKey(name)).toBeUndefined();
        send(eve, { cmd: '2', to: name, msg: 'hi' });
        expect(eve.take()).toEqual([{ cmd: '20' }]);
        send(eve, { cmd: '7', msg: 'hi', room: name });
        expect(eve.take()).toMatchObject([{ cmd: '90', code: ErrorCode.NOT_IN_ROOM }]);
      }
      const since = named.flatMap((room) => Array(10).fill({ room, epoch: 'e', id: 1 }));
      const resumer = connectWith(chat, {
        cmd: '0',
        nickname: 'rex',
        caps: ['rooms', 'history'],
        since,
      });
      expect(resumer.take()[0]).toMatchObject({ cmd: '03' });
    });
    expect(seen.longest).toBeLessThanOrEqual(MOST);
  });

  it('generated: nothing a name holds is normalised with more than 32 marks in a row', () => {
    const base = fc.constantFrom('a', 'Z', '1', '\u0e33', '\u0bbe');
    const markish = fc.constantFrom(
      '\u0301', // class 230
      '\u0316', // class 220
      '\u0334', // class 1
      '\u05b0', // class 10
      '\u0344', // decomposes to two marks
      '\u0bcd', // Tamil virama, class 9
      '\u0bbe', // a spacing mark of class 0
      '\u309b', // a symbol that folds to a mark
      '\u309c',
      '\u200b', // dropped by folding
      '\u034f', // a mark that folding drops
      '\ud834\udd65', // U+1D165, a spacing mark of class 216
    );
    // Letters, each with a run of up to 80 marks and what folds into them.
    const piece = fc
      .tuple(base, fc.array(markish, { maxLength: 80, size: 'max' }))
      .map(([b, ms]) => b + ms.join(''));
    fc.assert(
      fc.property(
        fc.array(piece, { maxLength: 12 }).map((ps) => ps.join('').slice(0, MAX_LOOKUP_LENGTH)),
        (name) => {
          const seen = normalised(() => {
            lookupKey(name);
            checkNickname(name);
            checkRoomName(name);
          });
          expect(seen.longest).toBeLessThanOrEqual(MOST);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('generated: every name people may take is found, in any canonical spelling', () => {
    const letter = fc.constantFrom('a', 'e', 'o', 'ç', 'ế', 'ᾂ', 'க', 'ஔ', 'д', 'ש', '゛', 'ำ');
    const mark = fc.constantFrom('\u0301', '\u0316', '\u0bbe', '\u0bca', '\u0bcd', '\u05b0');
    const piece = fc
      .tuple(letter, fc.array(mark, { maxLength: 10 }))
      .map(([l, ms]) => l + ms.join(''));
    let taken = 0;
    fc.assert(
      fc.property(fc.array(piece, { minLength: 1, maxLength: 12 }), (pieces) => {
        const raw = pieces.join('');
        const room = checkRoomName(raw);
        if (!room.ok) return;
        taken++;
        const key = lookalikeKey(room.nickname);
        expect(lookupKey(room.nickname)).toBe(key);
        expect(lookupKey(room.nickname.normalize('NFD'))).toBe(key);
        expect(lookupKey(raw)).toBe(key);
        // As a nickname, by the nickname's key.
        const nick = nicknameKey(room.nickname);
        expect(nicknameLookupKey(room.nickname.normalize('NFD'))).toBe(nick);
        expect(nicknameLookupKey(raw)).toBe(nick);
      }),
      { numRuns: 500 },
    );
    // The generator must reach names that pass, or this proves nothing.
    expect(taken).toBeGreaterThan(50);
    // U+309B is a symbol that folds to a mark, so a name of many of them folds to a run of
    // marks no lookup finds: refused, as a name of too many marks.
    expect(checkRoomName(`a${'\u309b'.repeat(MOST + 1)}`)).toEqual({
      ok: false,
      reason:
        'room name must not contain so many combining marks in a row, or symbols that stand for them',
    });
    // U+0BCA is one mark that decomposes to two, the second folding to a letter: 17 of them
    // fold to short runs, but their decomposed spelling holds 34 marks in a row, which a
    // lookup does not find. Refused by the 8 a name may hold in a row.
    const tamil = `\u0b95${'\u0bca'.repeat(17)}`;
    expect(longestRun(tamil.normalize('NFD'))).toBeGreaterThan(MOST);
    expect(lookupKey(tamil.normalize('NFD'))).toBeUndefined();
    expect(checkRoomName(tamil)).toEqual({
      ok: false,
      reason: `room name must not contain more than ${MAX_MARKS_IN_A_ROW} combining marks in a row`,
    });
    const most = checkRoomName(`a${'\u309b'.repeat(MOST)}`);
    expect(most).toMatchObject({ ok: true });
    if (most.ok) expect(lookupKey(most.nickname)).toBe(lookalikeKey(most.nickname));
  });
});

describe('ban masks with long runs of combining marks', () => {
  it('are not normalised when an operator UNBANs one: no ban has a mask that long', () => {
    const chat = new Chat({
      maxUsers: 10,
      operators: [{ name: 'teacher', verify: (p) => p === 'sesame' }],
    });
    const op = joinChat(chat, 'op', ['errors', 'moderation']);
    send(op, { cmd: '92', name: 'teacher', password: 'sesame' });
    send(op, { cmd: '95', mask: 'bob' });
    op.take();
    const seen = normalised(() => {
      send(op, { cmd: '96', mask: FRAME });
      expect(op.take()).toMatchObject([{ cmd: '98', bans: [{ mask: 'bob' }] }]);
    });
    expect(seen.longest).toBeLessThanOrEqual(MOST);
  });
});

describe('OPER passwords with long runs of combining marks', () => {
  const hash = hashPassword('sesame');

  it('are wrong without being normalised or hashed', () => {
    const seen = normalised(() => {
      expect(verifyPassword(FRAME, hash)).toBe(false);
    });
    expect(seen.calls).toBe(0);
    expect(verifyPassword('sesame', hash)).toBe(true);
  });

  it('cannot be hashed past the longest checked', () => {
    expect(() => hashPassword('x'.repeat(MAX_PASSWORD_LENGTH + 1))).toThrow(RangeError);
    const longest = 'y'.repeat(MAX_PASSWORD_LENGTH);
    expect(verifyPassword(longest, hashPassword(longest))).toBe(true);
  });
});
