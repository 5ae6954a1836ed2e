import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ChatEvent } from '../../../src/core/events.js';
import { type Capability, grant } from '../../../src/protocol/capabilities.js';
import { ErrorCode } from '../../../src/protocol/codes.js';
import { encodePlainChatLine, serializeLine } from '../../../src/protocol/message-codec.js';
import type { ServerMessage } from '../../../src/protocol/messages.js';
import { parseRequestText } from '../../../src/protocol/request-codec.js';
import { inertJson } from '../../../src/protocol/text.js';
import { toServerMessage } from '../../../src/transports/dialects/json.js';

const notAString = fc.oneof(
  fc.integer(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.string(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 4 }), fc.string({ maxLength: 4 }), { maxKeys: 2 }),
  fc.constant('\ud800'),
);

describe('room requests', () => {
  it('parses JOIN_ROOM and PART with any string room, and refuses any other value', () => {
    fc.assert(
      fc.property(fc.constantFrom('100', '102'), fc.string(), notAString, (cmd, room, bad) => {
        expect(parseRequestText(JSON.stringify({ cmd, room }))).toEqual(
          /\p{Cs}/u.test(room)
            ? expect.objectContaining({ ok: false })
            : { ok: true, request: { cmd, room } },
        );
        const refused = parseRequestText(JSON.stringify({ cmd, room: bad }));
        expect(refused).toEqual({
          ok: false,
          error: {
            code: ErrorCode.INVALID_FIELD,
            message: '"room" must be a well-formed string',
            ref: cmd,
          },
        });
        expect(parseRequestText(JSON.stringify({ cmd }))).toMatchObject({ ok: false });
      }),
    );
  });

  it('keeps the room of CHAT and USERS, and marks a malformed one rather than refusing it', () => {
    fc.assert(
      fc.property(fc.string(), notAString, (msg, bad) => {
        fc.pre(!/\p{Cs}/u.test(msg));
        expect(parseRequestText(JSON.stringify({ cmd: '7', msg, room: 'physics' }))).toEqual({
          ok: true,
          request: { cmd: '7', msg, room: 'physics' },
        });
        expect(parseRequestText(JSON.stringify({ cmd: '7', msg, room: bad }))).toEqual({
          ok: true,
          request: { cmd: '7', msg, room: null },
        });
        expect(parseRequestText(JSON.stringify({ cmd: '1', room: bad }))).toEqual({
          ok: true,
          request: { cmd: '1', room: null },
        });
        expect(parseRequestText(JSON.stringify({ cmd: '7', msg }))).toEqual({
          ok: true,
          request: { cmd: '7', msg },
        });
      }),
    );
  });
});

const someCaps = fc
  .subarray(['errors', 'renames', 'whispers', 'rooms'])
  .map((c) => new Set<Capability>(grant(c)));
const name = fc.string({ minLength: 1, maxLength: 10 });
const roomName = fc.oneof(fc.constant('lobby'), name);
const event: fc.Arbitrary<Exclude<ChatEvent, { type: 'whisper' }>> = fc.oneof(
  fc.record({
    type: fc.constant('joined' as const),
    room: roomName,
    nickname: name,
    count: fc.nat(),
  }),
  fc.record({
    type: fc.constant('left' as const),
    room: roomName,
    nickname: name,
    count: fc.nat(),
  }),
  fc.record({ type: fc.constant('renamed' as const), room: roomName, from: name, to: name }),
  fc.record({
    type: fc.constant('chat' as const),
    room: roomName,
    id: fc.nat(),
    at: fc.nat(),
    from: name,
    msg: fc.string(),
  }),
);

describe('the dialect and rooms', () => {
  it('shows a client without "rooms" lobby events in the course shape, and nothing of other rooms', () => {
    fc.assert(
      fc.property(event, someCaps, (e, caps) => {
        const message = toServerMessage(e, caps);
        if (caps.has('rooms')) {
          if (message !== undefined) expect(message).toMatchObject({ room: e.room });
          return;
        }
        if (e.room !== 'lobby') {
          expect(message).toBeUndefined();
          return;
        }
        const withRooms = toServerMessage(e, new Set([...caps, 'rooms' as const]));
        if (message === undefined) {
          expect(withRooms).toBeUndefined();
          return;
        }
        const { room: _room, id: _id, at: _at, ...course } = withRooms as Record<string, unknown>;
        expect(message).toEqual(course);
      }),
    );
  });

  it('serialises "71" to the same bytes as JSON.stringify', () => {
    const text = fc.string({
      unit: fc.oneof(
        fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
        fc.constantFrom('\ud800', '"', '\\', '\u0000', '\u2028', '\u0085', '\u2066'),
      ),
    });
    const num = fc.oneof(fc.nat(), fc.double(), fc.constant(1_764_495_000_123));
    fc.assert(
      fc.property(
        text,
        num,
        num,
        fc.option(text, { nil: undefined }),
        fc.boolean(),
        (room, id, at, cid, duplicate) => {
          const m: ServerMessage = { cmd: '71', room, id, at };
          if (cid !== undefined) m.cid = cid;
          if (duplicate) m.duplicate = true;
          expect(serializeLine(m)).toBe(`${inertJson(JSON.stringify(m))}\n`);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('serialises a chat that carries its room as JSON.stringify does; no byte fast path', () => {
    const text = fc.oneof(
      fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)) }),
      fc.string({
        unit: fc.oneof(
          fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
          fc.constantFrom('\ud800', '"', '\\', '\u0000', '\u007f', '\u00e9', '\u009b', '\u200f'),
        ),
      }),
    );
    const num = fc.option(
      fc.oneof(
        fc.nat(),
        fc.constant(1_764_495_000_123),
        fc.double(),
        fc.constantFrom(-0, Number.NaN, Number.POSITIVE_INFINITY, 1e21, 1.5e-7),
      ),
      { nil: undefined },
    );
    fc.assert(
      fc.property(text, text, text, num, num, fc.boolean(), (from, msg, room, id, at, action) => {
        const m: ServerMessage = { cmd: '70', from, msg, room };
        if (id !== undefined) m.id = id;
        if (at !== undefined) m.at = at;
        if (action) m.action = true;
        const line = serializeLine(m);
        expect(line).toBe(`${inertJson(JSON.stringify(m))}\n`);
        // Measured slower end to end than serialising it (docs/performance.md).
        expect(encodePlainChatLine(m)).toBeUndefined();
      }),
      { numRuns: 3000 },
    );
  });

  it("serialises an action (IRC's /me) without a room as JSON.stringify does; no byte fast path", () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (from, msg) => {
        const m: ServerMessage = { cmd: '70', from, msg, action: true };
        expect(serializeLine(m)).toBe(`${inertJson(JSON.stringify(m))}\n`);
        expect(encodePlainChatLine(m)).toBeUndefined();
      }),
    );
  });
});
