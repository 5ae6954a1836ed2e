import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FrameDecoder, FrameTooLargeError } from '../../../src/protocol/frame-decoder.js';

const utf8 = new TextEncoder();
const text = new TextDecoder();

function decodeAll(chunks: Uint8Array[], maxFrame = 1 << 20): string[] {
  const frames: string[] = [];
  const decoder = new FrameDecoder(maxFrame, (frame) => frames.push(text.decode(frame)));
  for (const chunk of chunks) decoder.push(chunk);
  return frames;
}

/** Splits bytes at the given cut points. */
function chunk(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let last = 0;
  for (const p of points) {
    out.push(bytes.slice(last, p));
    last = p;
  }
  out.push(bytes.slice(last));
  return out;
}

// Strings full of the characters a bracket scanner could trip on.
const tricky = fc.string({
  unit: fc.oneof(
    fc.constantFrom('{', '}', '[', ']', '"', '\\', '\n', ' ', 'a', '한', '😀', '\u0000'),
    fc.string({ minLength: 1, maxLength: 1 }),
  ),
  maxLength: 20,
});
const request = fc.record({
  cmd: fc.constantFrom('0', '1', '2', '7'),
  msg: tricky,
  n: fc.double(),
});
const separator = fc.constantFrom('', '\n', '\r\n', ' ', '\n\n', '\t');

describe('FrameDecoder', () => {
  it('decodes any chunking of back-to-back or delimited objects to the same frames', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(request, separator), { minLength: 1, maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (items, cuts) => {
          const texts = items.map(([r]) => JSON.stringify(r));
          const stream = utf8.encode(items.map(([, sep], i) => texts[i] + sep).join(''));
          const frames = decodeAll(chunk(stream, cuts));
          expect(frames).toEqual(texts);
          expect(frames.map((f) => JSON.parse(f))).toEqual(texts.map((t) => JSON.parse(t)));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('decodes the same frames fed one byte at a time', () => {
    fc.assert(
      fc.property(fc.array(request, { minLength: 1, maxLength: 5 }), (requests) => {
        const texts = requests.map((r) => JSON.stringify(r));
        const stream = utf8.encode(texts.join(''));
        const bytes = Array.from(stream, (b) => Uint8Array.of(b));
        expect(decodeAll(bytes)).toEqual(texts);
      }),
      { numRuns: 100 },
    );
  });

  it('cuts Python json.dumps output sent with no delimiter', () => {
    const stream = '{"cmd": "7", "msg": "a}b{"}{"cmd": "1"}{"cmd": "6", "beginTime": 1.5}';
    expect(decodeAll([utf8.encode(stream)])).toEqual([
      '{"cmd": "7", "msg": "a}b{"}',
      '{"cmd": "1"}',
      '{"cmd": "6", "beginTime": 1.5}',
    ]);
  });

  it('keeps escaped quotes and backslashes inside strings', () => {
    const frame = JSON.stringify({ msg: 'say \\"}\\' });
    expect(decodeAll([utf8.encode(`${frame}${frame}`)])).toEqual([frame, frame]);
  });

  it('turns a line of garbage into one frame and recovers at the next line', () => {
    const frames = decodeAll([utf8.encode('hello world\r\n42\n"str"\n{"cmd":"1"}')]);
    expect(frames).toEqual(['hello world', '42', '"str"', '{"cmd":"1"}']);
  });

  it('handles arrays and nested objects as single frames', () => {
    expect(decodeAll([utf8.encode('[1,[2,{"a":[3]}]]{"a":{"b":{}}}')])).toEqual([
      '[1,[2,{"a":[3]}]]',
      '{"a":{"b":{}}}',
    ]);
  });

  it('rejects a frame larger than the limit, complete or not', () => {
    const big = JSON.stringify({ msg: 'x'.repeat(200) });
    expect(() => decodeAll([utf8.encode(big)], 100)).toThrow(FrameTooLargeError);
    const decoder = new FrameDecoder(100, () => {});
    decoder.push(utf8.encode('{"msg":"'));
    expect(() => {
      for (let i = 0; i < 20; i++) decoder.push(utf8.encode('xxxxxxxxxx'));
    }).toThrow(FrameTooLargeError);
  });

  it('never buffers more than the limit plus one chunk', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 60 }), (chunks) => {
        const decoder = new FrameDecoder(128, () => {});
        for (const c of chunks) {
          try {
            decoder.push(c);
          } catch (err) {
            expect(err).toBeInstanceOf(FrameTooLargeError);
            decoder.reset();
          }
          expect(decoder.buffered).toBeLessThanOrEqual(128 + 64);
        }
      }),
    );
  });

  it('gives the same frames for any split of random bytes', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (bytes, cuts) => {
          expect(decodeAll(chunk(bytes, cuts))).toEqual(decodeAll([bytes]));
        },
      ),
      { numRuns: 300 },
    );
  });
});
