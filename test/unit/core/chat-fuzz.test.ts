import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import { FrameDecoder, FrameTooLargeError } from '../../../src/protocol/frame-decoder.js';
import {
  parseRequestFrame,
  parseRequestText,
  refusedFrame,
} from '../../../src/protocol/request-codec.js';
import { FakePeer } from '../../helpers/fake-peer.js';

const COURSE_CODES = new Set([
  '01',
  '02',
  '03',
  '10',
  '20',
  '21',
  '22',
  '30',
  '40',
  '50',
  '51',
  '60',
  '70',
  '8',
]);
const names = fc.constantFrom('ann', 'Ann', 'bob', 'cat', '', 'a b', 'dan', 'eve');
const msg = fc.oneof(fc.string({ maxLength: 8 }), fc.constant('I hate professor'));

const request = fc.oneof(
  names.map((nickname) => ({ cmd: '0', nickname })),
  fc.record({
    cmd: fc.constant('0'),
    nickname: names,
    caps: fc.constant(['errors', 'renames', 'whispers']),
  }),
  fc.constant({ cmd: '1' }),
  fc.record({ cmd: fc.constant('2'), to: names, msg }),
  fc.constant({ cmd: '3' }),
  fc.constant({ cmd: '4' }),
  fc.record({ cmd: fc.constant('5'), newNickname: names }),
  fc.record({ cmd: fc.constant('6'), beginTime: fc.double() }),
  fc.record({ cmd: fc.constant('7'), msg }),
  fc.jsonValue().map((v) => v as object),
);

type Action =
  | { kind: 'open' }
  | { kind: 'send'; who: number; text: string }
  | { kind: 'drop'; who: number };

const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ kind: 'open' as const }) },
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('send' as const),
      who: fc.nat(7),
      text: request.map((r) => JSON.stringify(r)),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('send' as const),
      who: fc.nat(7),
      text: fc.string({ maxLength: 20 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('drop' as const), who: fc.nat(7) }) },
);

describe('Chat under random traffic', () => {
  it('keeps its invariants whatever clients send', () => {
    fc.assert(
      fc.property(fc.array(action, { maxLength: 80 }), (actions) => {
        const chat = new Chat({ maxUsers: 3 });
        const peers: FakePeer[] = [];
        const optedIn = new Set<FakePeer>();
        for (const a of actions) {
          if (a.kind === 'open' || peers.length === 0) {
            const p = new FakePeer();
            p.session = chat.open(p);
            peers.push(p);
            if (a.kind === 'open') continue;
          }
          const peer = peers[a.who % peers.length]!;
          if (a.kind === 'drop') {
            peer.session.ended('lost');
            continue;
          }
          if (peer.session.state === 'greeting' && a.text.includes('"caps"')) optedIn.add(peer);
          const members = [...chat.lobby.list()];
          const before = members.length;
          peer.session.receive(parseRequestText(a.text));
          // Capacity and unique nicknames hold after every step.
          expect(chat.lobby.size).toBeLessThanOrEqual(3);
          const keys = [...chat.lobby.list()].map((m) => m.nickname.toLowerCase());
          expect(new Set(keys).size).toBe(keys.length);
          for (const m of chat.lobby.list()) expect(chat.find(m.nickname)).toBe(m);
          expect(chat.lobby.size).toBeLessThanOrEqual(before + 1);
        }
        // Clients that asked for nothing only ever heard course codes.
        for (const p of peers) {
          if (optedIn.has(p)) continue;
          for (const o of p.outbox) expect(COURSE_CODES.has(o.cmd)).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('never throws on random byte streams through the decoder and handler', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 30 }), (chunks) => {
        const chat = new Chat();
        const peer = new FakePeer();
        peer.session = chat.open(peer);
        const decoder = new FrameDecoder(256, {
          frame: (frame) => peer.session.receive(parseRequestFrame(frame)),
          refused: (reason) => peer.session.receive(refusedFrame(reason)),
        });
        for (const c of chunks) {
          try {
            decoder.push(c);
          } catch (err) {
            // Only the frame limit may throw; anything else is a bug.
            if (!(err instanceof FrameTooLargeError)) throw err;
            decoder.reset();
          }
        }
        expect(chat.lobby.size).toBeLessThanOrEqual(1);
      }),
      { numRuns: 300 },
    );
  });
});
