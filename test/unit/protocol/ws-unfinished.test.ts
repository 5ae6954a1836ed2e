/** WsUnfinished: bytes of a WebSocket data message not yet whole, followed through raw bytes. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { WsUnfinished } from '../../../src/protocol/ws-unfinished.js';

interface Frame {
  last: boolean;
  opcode: number;
  length: number;
  masked: boolean;
}

function headerOf(frame: Frame): Uint8Array {
  const { length } = frame;
  const extended = length > 65535 ? 8 : length > 125 ? 2 : 0;
  const head = new Uint8Array(2 + extended + (frame.masked ? 4 : 0));
  head[0] = (frame.last ? 0x80 : 0) | frame.opcode;
  const mask = frame.masked ? 0x80 : 0;
  if (extended === 0) head[1] = mask | length;
  else if (extended === 2) {
    head[1] = mask | 126;
    head[2] = length >> 8;
    head[3] = length & 0xff;
  } else {
    head[1] = mask | 127;
    new DataView(head.buffer).setBigUint64(2, BigInt(length));
  }
  // The mask key's bytes, and the payload's, are anything: 0xff shows they are never read.
  head.fill(0xff, 2 + extended);
  return head;
}

function encode(frames: readonly Frame[]): { bytes: Uint8Array; heads: number[] } {
  const parts: Uint8Array[] = [];
  const heads: number[] = [];
  for (const frame of frames) {
    const head = headerOf(frame);
    heads.push(head.length);
    parts.push(head, new Uint8Array(frame.length).fill(0xff));
  }
  return { bytes: Buffer.concat(parts), heads };
}

/** What is unfinished after the first `received` bytes, walking whole frames. */
function expected(frames: readonly Frame[], heads: readonly number[], received: number): number {
  let at = 0;
  let unfinished = 0;
  for (const [i, frame] of frames.entries()) {
    const head = heads[i]!;
    const size = head + frame.length;
    const data = frame.opcode < 8;
    if (at + size <= received) {
      if (data) unfinished = frame.last ? 0 : unfinished + size;
      at += size;
      continue;
    }
    // Under way: counted once its header is whole.
    if (data && received - at >= head) unfinished += received - at;
    break;
  }
  return unfinished;
}

const lengths = fc.oneof(
  fc.integer({ min: 0, max: 200 }),
  fc.constantFrom(125, 126, 127, 65535, 65536, 65537),
  fc.integer({ min: 126, max: 70_000 }),
);
const control = fc.record({
  last: fc.constant(true),
  opcode: fc.constantFrom(8, 9, 10),
  length: fc.integer({ min: 0, max: 125 }),
  masked: fc.boolean(),
});
/** A data message in fragments, with control frames between them. */
const message = fc
  .tuple(
    fc.array(fc.tuple(lengths, fc.array(control, { maxLength: 2 })), {
      minLength: 1,
      maxLength: 4,
    }),
    fc.constantFrom(1, 2),
    fc.boolean(),
  )
  .map(([fragments, opcode, masked]) =>
    fragments.flatMap(([length, controls], i): Frame[] => [
      { last: i === fragments.length - 1, opcode: i === 0 ? opcode : 0, length, masked },
      ...controls,
    ]),
  );

describe('WsUnfinished', () => {
  it('counts, after any chunk, the bytes of the data message under way', () => {
    fc.assert(
      fc.property(
        fc.array(message, { minLength: 1, maxLength: 6 }).map((m) => m.flat()),
        fc.array(fc.integer({ min: 1, max: 40_000 }), { minLength: 1, maxLength: 40 }),
        (frames, cuts) => {
          const { bytes, heads } = encode(frames);
          const counter = new WsUnfinished();
          let at = 0;
          for (const cut of [...cuts, bytes.length]) {
            const end = Math.min(bytes.length, at + cut);
            const now = counter.feed(bytes.subarray(at, end));
            at = end;
            expect(now).toBe(expected(frames, heads, at));
            if (at === bytes.length) break;
          }
          // Every message ended: nothing is unfinished.
          expect(counter.bytes).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('counts a fragment whose message never ends, and a ping between its fragments', () => {
    const counter = new WsUnfinished();
    const first = { last: false, opcode: 1, length: 19_990, masked: true };
    const ping = { last: true, opcode: 9, length: 4, masked: true };
    const next = { last: false, opcode: 0, length: 10, masked: true };
    const { bytes } = encode([first, ping, next]);
    expect(counter.feed(bytes)).toBe(19_990 + 8 + 10 + 6);
    // The last fragment, byte by byte: the count ends with it.
    const { bytes: end } = encode([{ last: true, opcode: 0, length: 3, masked: true }]);
    for (const byte of end.subarray(0, -1)) counter.feed(Uint8Array.of(byte));
    expect(counter.bytes).toBe(19_990 + 8 + 10 + 6 + 6 + 2);
    expect(counter.feed(end.subarray(-1))).toBe(0);
  });
});
