import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { type Deliverable, Delivery, type Encoder } from '../../../src/core/events.js';
import { COURSE_FRAME_BYTES, encodeCourseFrames } from '../../../src/protocol/course-frame.js';
import { serializeLine } from '../../../src/protocol/message-codec.js';
import type { ServerMessage } from '../../../src/protocol/messages.js';
import { hasUnsafe, visible } from '../../../src/protocol/text.js';

const utf8 = new TextDecoder();

/** What a course client's recv(1024) + json.loads makes of each 1024-byte block. */
function blocks(bytes: Uint8Array): unknown[] {
  expect(bytes.length % COURSE_FRAME_BYTES).toBe(0);
  const out: unknown[] = [];
  for (let at = 0; at < bytes.length; at += COURSE_FRAME_BYTES) {
    const block = bytes.subarray(at, at + COURSE_FRAME_BYTES);
    expect(block[COURSE_FRAME_BYTES - 1]).toBe(0x0a);
    // Python's json.loads accepts surrounding whitespace, as JSON.parse does.
    out.push(JSON.parse(utf8.decode(block)));
  }
  return out;
}

// Text as users type it, plus what JSON must escape: quotes, backslashes,
// controls, lone surrogates, and characters of every UTF-8 length.
const text = fc.string({
  unit: fc.oneof(
    fc.constantFrom(
      'a',
      ' ',
      '"',
      '\\',
      '\n',
      '\u0001',
      '\u007f',
      'é',
      '한',
      '😀',
      '\ud800',
      '\udc00',
    ),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
  ),
  maxLength: 3000,
});
const nickname = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 32 });

describe('frames for course clients', () => {
  it('pads every small message to exactly one recv(1024), same JSON', () => {
    const messages: ServerMessage[] = [
      { cmd: '03', serverAddress: ['127.0.0.1', 20825], userCount: 3 },
      { cmd: '8', nickname: '여러분', userCount: 2 },
      { cmd: '30', nickname: 'ann', userCount: 1 },
      { cmd: '10', users: [['ann', '127.0.0.1', 5000]] },
      { cmd: '60', beginTime: 1590314400123.4568 },
      { cmd: '70', from: 'ann', msg: 'hi' },
      { cmd: '02' },
    ];
    for (const m of messages) {
      const bytes = encodeCourseFrames(m);
      expect(bytes.length).toBe(COURSE_FRAME_BYTES);
      expect(blocks(bytes)).toEqual([m]);
    }
  });

  it('splits a long chat into several "70"s from the same sender that join back to the text', () => {
    fc.assert(
      fc.property(nickname, text, (from, msg) => {
        const parsed = blocks(encodeCourseFrames({ cmd: '70', from, msg })) as {
          cmd: string;
          from: string;
          msg: string;
        }[];
        for (const p of parsed) expect(p).toMatchObject({ cmd: '70', from });
        // Control and bidi characters made visible, since a course client prints the text.
        const shown = visible(msg);
        expect(parsed.map((p) => p.msg).join('')).toBe(shown);
        for (const p of parsed) expect(hasUnsafe(p.msg)).toBe(false);
        // No frame is wasted: a message that fits takes exactly one.
        const whole = new TextEncoder().encode(
          serializeLine({ cmd: '70', from, msg: shown }),
        ).length;
        if (whole <= COURSE_FRAME_BYTES) expect(parsed.length).toBe(1);
      }),
      { numRuns: 300 },
    );
  });

  it('cuts a long chat between graphemes: no flag, accent or emoji sequence split in two', () => {
    const segmenter = new Intl.Segmenter(undefined, { granularity: 'grapheme' });
    const grapheme = fc.constantFrom(
      'a',
      ' ',
      '한',
      'e\u0301',
      '🇰🇷',
      '👍🏽',
      '\u1112\u1161\u11ab',
      'x\u0332',
    );
    fc.assert(
      fc.property(fc.array(grapheme, { minLength: 300, maxLength: 1500 }), (pieces) => {
        const msg = pieces.join('');
        const bounds = new Set([...segmenter.segment(msg)].map((g) => g.index));
        const parts = (
          blocks(encodeCourseFrames({ cmd: '70', from: 'ann', msg })) as { msg: string }[]
        ).map((p) => p.msg);
        expect(parts.join('')).toBe(msg);
        let at = 0;
        for (const part of parts.slice(0, -1)) {
          at += part.length;
          expect(bounds.has(at), `cut at ${at}`).toBe(true);
        }
      }),
      { numRuns: 100 },
    );
    // A grapheme too long for one frame is still cut, between code points.
    const stacked = `e${'\u0301'.repeat(2_000)}`;
    const parts = (
      blocks(encodeCourseFrames({ cmd: '70', from: 'ann', msg: stacked })) as { msg: string }[]
    ).map((p) => p.msg);
    expect(parts.length).toBeGreaterThan(1);
    expect(parts.join('')).toBe(stacked);
  });

  it('looks graphemes up only where it cuts, never walking the whole text through them', () => {
    // 4,096 RIGHT-TO-LEFT OVERRIDEs, each made visible as <U+202E>: 32,768 characters.
    // Segmenting them all took half a second of the event loop for one chat.
    const segments = Object.getPrototypeOf(new Intl.Segmenter().segment('')) as {
      [Symbol.iterator]: () => Iterator<unknown>;
      containing: (at: number) => unknown;
    };
    const walked = vi.spyOn(segments, Symbol.iterator);
    const looked = vi.spyOn(segments, 'containing');
    try {
      const msg = '\u202e'.repeat(4_096);
      const parts = (
        blocks(encodeCourseFrames({ cmd: '70', from: 'ann', msg })) as { msg: string }[]
      ).map((p) => p.msg);
      expect(parts.join('')).toBe(visible(msg));
      expect(walked).not.toHaveBeenCalled();
      expect(looked.mock.calls.length).toBe(parts.length - 1);
    } finally {
      walked.mockRestore();
      looked.mockRestore();
    }
  });

  it('sends a message that cannot be split and does not fit as it is', () => {
    const users: [string, string, number][] = Array.from({ length: 10 }, (_, i) => [
      `${'한'.repeat(31)}${i}`,
      '127.0.0.1',
      50000 + i,
    ]);
    const m: ServerMessage = { cmd: '10', users };
    expect(utf8.decode(encodeCourseFrames(m))).toBe(serializeLine(m));
  });
});

describe('Delivery', () => {
  it('encodes once per encoder, however recipients of different kinds alternate', () => {
    const counted = () => {
      const encoder = {
        calls: 0,
        encode: (item: Deliverable) => {
          encoder.calls++;
          return new TextEncoder().encode(JSON.stringify(item));
        },
      };
      return encoder satisfies Encoder;
    };
    const tcp = counted();
    const ws = counted();
    const out = new Delivery({ type: 'chat', room: 'lobby', id: 1, at: 0, from: 'ann', msg: 'hi' });
    for (let i = 0; i < 10; i++) {
      out.bytes(tcp);
      out.bytes(ws);
    }
    expect([tcp.calls, ws.calls]).toEqual([1, 1]);
    expect(out.bytes(tcp)).toBe(out.bytes(tcp));
  });
});
