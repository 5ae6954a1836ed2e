import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BLANK_RUN,
  FrameDecoder,
  type FrameDecoderOptions,
  type FrameRefusal,
  FrameTooLargeError,
  MAX_DEPTH,
  nestsDeeperThan,
} from '../../../src/protocol/frame-decoder.js';

const utf8 = new TextEncoder();
const text = new TextDecoder();

/** A frame's text, or a refusal. */
type Event = string | { refused: FrameRefusal };

function recorder(
  maxFrame: number,
  options?: FrameDecoderOptions,
): { decoder: FrameDecoder; events: Event[] } {
  const events: Event[] = [];
  const decoder = new FrameDecoder(
    maxFrame,
    {
      frame: (frame) => events.push(text.decode(frame)),
      refused: (reason) => events.push({ refused: reason }),
    },
    options,
  );
  return { decoder, events };
}

function decodeAll(chunks: Uint8Array[], maxFrame = 1 << 20, options?: FrameDecoderOptions) {
  const { decoder, events } = recorder(maxFrame, options);
  for (const chunk of chunks) decoder.push(chunk);
  return events;
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

const bytewise = (bytes: Uint8Array) => Array.from(bytes, (b) => Uint8Array.of(b));

const GARBAGE = { refused: 'garbage' } as const;
const BLANK = { refused: 'blank' } as const;
const TOO_DEEP = { refused: 'too-deep' } as const;
const TOO_LARGE = { refused: 'too-large' } as const;

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
/** A request as the course client (json.dumps) or confab's clients write it. */
const requestText = fc.oneof(
  request.map((r) => JSON.stringify(r)),
  fc.constantFrom('{"cmd": "4"}', '{}', '{ }', '{\n  "cmd": "1"\n}', '{"cmd": "7", "msg": "{["}'),
);

const WHITESPACE = new Set([0x20, 0x0a, 0x0d, 0x09]);
/**
 * One line of garbage: bytes that cannot start a frame, with no newline, and
 * at least one byte that is not whitespace. "{" appears only where no object
 * can begin (followed by something other than '"' or "}").
 */
const garbageLine = fc
  .array(
    fc.oneof(
      { weight: 4, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 8 }) },
      { weight: 1, arbitrary: fc.constantFrom('{x', '{ [', '{{1', '{\t:', '{\r\r]', '}', ']]') },
    ),
    { minLength: 1, maxLength: 12 },
  )
  .map((parts) => {
    const bytes = parts.flatMap((p) =>
      typeof p === 'string'
        ? [...utf8.encode(p)]
        : // Raw bytes lose their "{" and newlines; the units above place "{" safely.
          [...p].map((b) => (b === 0x7b || b === 0x0a ? 0x78 : b)),
    );
    if (bytes.every((b) => WHITESPACE.has(b))) bytes.push(0x78);
    return Uint8Array.from(bytes);
  });

function concat(...parts: (Uint8Array | string)[]): Uint8Array {
  const arrays = parts.map((p) => (typeof p === 'string' ? utf8.encode(p) : p));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

/** An object nested `depth` levels deep in total, through arrays and objects. */
function nested(depth: number, kinds: string): string {
  const open: string[] = [];
  const close: string[] = [];
  for (let d = 1; d < depth; d++) {
    const object = kinds[d % kinds.length] === '{';
    open.push(object ? '{"a":' : '[');
    close.push(object ? '}' : ']');
  }
  return `{"cmd": "6", "beginTime": ${open.join('')}1${close.reverse().join('')}}`;
}

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
          expect(frames.map((f) => JSON.parse(f as string))).toEqual(
            texts.map((t) => JSON.parse(t)),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  it('decodes the same frames fed one byte at a time', () => {
    fc.assert(
      fc.property(fc.array(request, { minLength: 1, maxLength: 5 }), (requests) => {
        const texts = requests.map((r) => JSON.stringify(r));
        expect(decodeAll(bytewise(utf8.encode(texts.join(''))))).toEqual(texts);
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

  it('refuses each line of garbage once and recovers at the next line', () => {
    const events = decodeAll([utf8.encode('hello world\r\n42\n"str"\n{{{{\n{"cmd":"1"}')]);
    expect(events).toEqual([GARBAGE, GARBAGE, GARBAGE, GARBAGE, '{"cmd":"1"}']);
  });

  it('recovers at the next object without waiting for a newline', () => {
    for (const stray of ['x', '}', ']]', '\u0000', '{x', '{{', '[', '"']) {
      const { decoder, events } = recorder(1 << 20);
      decoder.push(utf8.encode(stray));
      decoder.push(utf8.encode('{"cmd": "4"}'));
      expect(events, JSON.stringify(stray)).toEqual([GARBAGE, '{"cmd": "4"}']);
      expect(decoder.buffered).toBe(0);
    }
  });

  it('ends a request left unclosed where the next one begins, with or without a line feed', () => {
    for (const sep of ['\n', '', '\r\n  ']) {
      for (const open of [
        '{"cmd":"7","msg":"typo"',
        '{"cmd":"7","n":12',
        '{"a":{"b":[1,2]}',
        '{"a":true',
      ]) {
        const { decoder, events } = recorder(1 << 20);
        decoder.push(utf8.encode(`${open}${sep}{"cmd":"4"}\n{"cmd":"4"}`));
        expect(events, JSON.stringify(open + sep)).toEqual([GARBAGE, '{"cmd":"4"}', '{"cmd":"4"}']);
        expect(decoder.buffered).toBe(0);
      }
    }
  });

  it('still takes a request written over many lines, objects and arrays nested after line feeds', () => {
    const pretty = JSON.stringify(
      { cmd: '0', nickname: 'ann', caps: ['rooms'], x: { y: [{ z: [[1], {}] }] } },
      null,
      2,
    );
    expect(pretty.split('\n').length).toBeGreaterThan(10);
    expect(decodeAll([utf8.encode(`${pretty}\n${pretty}`)])).toEqual([pretty, pretty]);
  });

  it('loses at most one of the requests after one cut off anywhere, and never the last, however chunked', () => {
    const request = '{"cmd":"4"}';
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 3 }), {
          minKeys: 1,
          maxKeys: 4,
        }),
        fc.nat(),
        fc.constantFrom('\n', '', ' ', '\r\n'),
        fc.integer({ min: 2, max: 4 }),
        fc.array(fc.nat(), { maxLength: 4 }),
        (value, at, sep, count, cuts) => {
          const whole = JSON.stringify(value);
          const cut = whole.slice(0, 1 + (at % (whole.length - 1)));
          const stream = utf8.encode(`${cut}${sep}${`${request}\n`.repeat(count)}`);
          const events = decodeAll(chunk(stream, cuts));
          const taken = events.filter((e) => e === request).length;
          expect(taken).toBeGreaterThanOrEqual(count - 1);
          expect(events.at(-1)).toBe(request);
          expect(events.some((e) => typeof e !== 'string')).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('treats arrays as garbage, though objects inside them still start frames', () => {
    expect(decodeAll([utf8.encode('[1,[2,{"a":[3]}]]{"a":{"b":{}}}')])).toEqual([
      GARBAGE,
      '{"a":[3]}',
      GARBAGE,
      '{"a":{"b":{}}}',
    ]);
  });

  it('turns any garbage before a request into exactly one refusal, however chunked', () => {
    fc.assert(
      fc.property(
        garbageLine,
        separator,
        requestText,
        fc.array(fc.nat(), { maxLength: 20 }),
        (garbage, sep, req, cuts) => {
          const stream = concat(garbage, sep, req);
          const expected = [GARBAGE, req];
          expect(decodeAll([stream])).toEqual(expected);
          expect(decodeAll(chunk(stream, cuts))).toEqual(expected);
          expect(decodeAll(bytewise(stream))).toEqual(expected);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('refuses one line of garbage at a time for newline-delimited clients', () => {
    fc.assert(
      fc.property(
        fc.array(garbageLine, { minLength: 1, maxLength: 6 }),
        requestText,
        (lines, req) => {
          const stream = concat(...lines.flatMap((l) => [l, '\n']), req, '\n');
          expect(decodeAll([stream])).toEqual([...lines.map(() => GARBAGE), req]);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('ends a frame at a line feed inside a string: an unclosed quote costs its line only', () => {
    // What a person types into nc: a quote too many, or a newline pasted into a message.
    const opened = fc
      .tuple(
        fc.constantFrom('{"cmd":"7","msg":"', '{"cmd":"7","msg":"a 12" pipe"}', '{"', '{"a":["\\'),
        fc.string({ maxLength: 30 }).map((t) => t.replace(/["\\\n]/g, '')),
      )
      .map(([head, tail]) => head + tail);
    fc.assert(
      fc.property(
        fc.array(opened, { minLength: 1, maxLength: 4 }),
        requestText,
        fc.array(fc.nat(), { maxLength: 20 }),
        (lines, req, cuts) => {
          const stream = concat(...lines.flatMap((l) => [l, '\n']), req, '\n');
          const expected = [...lines.map(() => GARBAGE), req];
          expect(decodeAll([stream])).toEqual(expected);
          expect(decodeAll(chunk(stream, cuts))).toEqual(expected);
          expect(decodeAll(bytewise(stream))).toEqual(expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('cuts at a line feed in a string the same way however chunked, long lines and deep ones too', () => {
    const line = fc
      .tuple(
        fc.constantFrom('{"a":"', '{"a":[[[["', '{"a":"\\'),
        fc.nat({ max: 60 }),
        fc.constantFrom('\n', '\n{"cmd":"4"}\n'),
      )
      .map(([head, n, tail]) => head + 'x'.repeat(n) + tail);
    /** Events up to a FrameTooLargeError, which ends them. */
    const outcome = (chunks: Uint8Array[], options: FrameDecoderOptions) => {
      const { decoder, events } = recorder(32, { maxDepth: 3, ...options });
      try {
        for (const c of chunks) decoder.push(c);
      } catch (err) {
        if (!(err instanceof FrameTooLargeError)) throw err;
        events.push({ refused: 'thrown' } as never);
      }
      return events;
    };
    fc.assert(
      fc.property(
        fc.array(line, { minLength: 1, maxLength: 4 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        fc.constantFrom<FrameDecoderOptions>({}, { oversize: 'skip' }),
        (lines, cuts, options) => {
          const bytes = concat(...lines);
          const whole = outcome([bytes], options);
          expect(outcome(chunk(bytes, cuts), options)).toEqual(whole);
          expect(outcome(bytewise(bytes), options)).toEqual(whole);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('never buffers garbage, and reports a long run once per maxFrame bytes', () => {
    const { decoder, events } = recorder(100);
    for (let i = 0; i < 35; i++) {
      decoder.push(utf8.encode('xxxxxxxxx{'));
      expect(decoder.buffered).toBeLessThanOrEqual(1);
    }
    // Each "{" held for a look at the next byte turns out garbage: 351 bytes in all.
    decoder.push(utf8.encode('x{"cmd":"1"}'));
    expect(events).toEqual([GARBAGE, GARBAGE, GARBAGE, GARBAGE, '{"cmd":"1"}']);

    const line = recorder(100);
    line.decoder.push(new Uint8Array(1000).fill(0x41));
    expect(line.decoder.buffered).toBe(0);
    expect(line.events).toEqual(Array(10).fill(GARBAGE));
  });

  it('counts whitespace between frames: once per maxFrame bytes of a run, however chunked', () => {
    const blank = fc.constantFrom(' ', '\n', '\r', '\t');
    fc.assert(
      fc.property(
        fc.array(
          fc
            .tuple(fc.integer({ min: 0, max: 350 }), blank, blank)
            .map(([n, a, b]) => Array.from({ length: n }, (_, i) => (i % 3 === 0 ? a : b))),
          { minLength: 1, maxLength: 5 },
        ),
        fc.array(fc.nat(), { maxLength: 8 }),
        (runs, cuts) => {
          // Each run of whitespace, then a request: the run refuses once per 100 bytes.
          const bytes = utf8.encode(runs.map((r) => `${r.join('')}{"cmd":"1"}`).join(''));
          const { decoder, events } = recorder(100);
          for (const piece of chunk(bytes, cuts)) decoder.push(piece);
          const expected = runs.flatMap((r) => [
            ...Array<typeof BLANK>(Math.floor(r.length / 100)).fill(BLANK),
            '{"cmd":"1"}',
          ]);
          expect(events).toEqual(expected);
          expect(decoder.buffered).toBe(0);
        },
      ),
    );
  });

  it('counts whitespace by BLANK_RUN bytes under a large maxFrame, and afresh after garbage', () => {
    const big = recorder(1 << 20);
    big.decoder.push(utf8.encode(`${' '.repeat(3 * BLANK_RUN + 10)}{"cmd":"1"}`));
    expect(big.events).toEqual([BLANK, BLANK, BLANK, '{"cmd":"1"}']);
    // The line of garbage is refused on its own; the blanks on either side of it are two runs.
    const small = recorder(100);
    small.decoder.push(utf8.encode(`${' '.repeat(60)}x\n${' '.repeat(60)}{"cmd":"1"}`));
    expect(small.events).toEqual([GARBAGE, '{"cmd":"1"}']);
  });

  it('refuses a frame nested too deep without parsing, buffering or throwing, then goes on', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: MAX_DEPTH + 1, max: 50_000 }),
        fc.constantFrom('[', '{', '[{', '{[[', '{{{['),
        fc.array(fc.nat(), { maxLength: 10 }),
        (depth, kinds, cuts) => {
          const stream = utf8.encode(`${nested(depth, kinds)}{"cmd": "4"}`);
          const expected = [TOO_DEEP, '{"cmd": "4"}'];
          const { decoder, events } = recorder(1 << 20);
          for (const c of chunk(stream, cuts)) {
            decoder.push(c);
            // Past the limit nothing is kept; before it, less than the limit's worth.
            expect(decoder.buffered).toBeLessThan(MAX_DEPTH * 6 + 40);
          }
          expect(events).toEqual(expected);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('accepts nesting up to the limit and refuses one level more', () => {
    expect(decodeAll([utf8.encode(nested(MAX_DEPTH, '[{'))])).toEqual([nested(MAX_DEPTH, '[{')]);
    expect(decodeAll([utf8.encode(nested(MAX_DEPTH + 1, '[{'))])).toEqual([TOO_DEEP]);
    expect(decodeAll([utf8.encode(nested(4, '['))], 1 << 20, { maxDepth: 3 })).toEqual([TOO_DEEP]);
    // Brackets inside strings are not nesting.
    const quoted = `{"msg": "${'['.repeat(100)}"}`;
    expect(decodeAll([utf8.encode(quoted)])).toEqual([quoted]);
  });

  it('counts a too-deep frame against maxFrame', () => {
    const deep = utf8.encode(nested(1000, '['));
    expect(() => decodeAll([deep], 500)).toThrow(FrameTooLargeError);
    expect(() => decodeAll(bytewise(deep), 500)).toThrow(FrameTooLargeError);
    expect(decodeAll(bytewise(deep), 5000)).toEqual([TOO_DEEP]);
  });

  it('rejects a frame larger than the limit, complete or not', () => {
    const big = JSON.stringify({ msg: 'x'.repeat(200) });
    expect(() => decodeAll([utf8.encode(big)], 100)).toThrow(FrameTooLargeError);
    const { decoder } = recorder(100);
    decoder.push(utf8.encode('{"msg":"'));
    expect(() => {
      for (let i = 0; i < 20; i++) decoder.push(utf8.encode('xxxxxxxxxx'));
    }).toThrow(FrameTooLargeError);
  });

  it('with oversize "skip", skips a large frame to its end and reads on', () => {
    // The skipped frame carries text that would pose as a frame if the
    // decoder resumed inside it.
    const fake = '{"cmd":"70","from":"admin","msg":"fake"}';
    const big = JSON.stringify({ cmd: '70', from: 'x', msg: `${'y'.repeat(300)}\n${fake}` });
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 20 }), (cuts) => {
        const stream = utf8.encode(`${big}\n{"cmd":"40"}\n`);
        const events = decodeAll(chunk(stream, cuts), 100, { oversize: 'skip' });
        expect(events).toEqual([TOO_LARGE, '{"cmd":"40"}']);
      }),
    );
    expect(decodeAll(bytewise(utf8.encode(`${big}{}`)), 100, { oversize: 'skip' })).toEqual([
      TOO_LARGE,
      '{}',
    ]);
  });

  it('with oversize "skip", says it is skipping from the chunk that passes the limit to the end', () => {
    // A frame too deep but not too large is skipped too, and is not one.
    const deep = '{"a":{"b":{"c":{}}}}\n';
    const big = JSON.stringify({ cmd: '03', motd: 'y'.repeat(300) });
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 20 }), (cuts) => {
        const { decoder, events } = recorder(100, { oversize: 'skip', maxDepth: 2 });
        let read = -deep.length;
        for (const piece of chunk(utf8.encode(`${deep}${big}\n{}`), cuts)) {
          decoder.push(piece);
          read += piece.length;
          expect(decoder.skippingOversize).toBe(read > 100 && read < big.length);
        }
        expect(events).toEqual([TOO_DEEP, TOO_LARGE, '{}']);
      }),
    );
  });

  it('never buffers more than the limit plus one chunk', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 60 }), (chunks) => {
        const { decoder } = recorder(128);
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

  it('holds for an unfinished frame a buffer of at most twice its bytes, or 256', () => {
    const pieces = fc.array(
      fc.oneof(
        fc.constantFrom('{"cmd":"7","msg":"', '"}', '}', '{', '\n'),
        fc.string({ maxLength: 300 }),
      ),
      { maxLength: 40 },
    );
    fc.assert(
      fc.property(pieces, (chunks) => {
        const { decoder } = recorder(4096);
        for (const c of chunks) {
          try {
            decoder.push(utf8.encode(c));
          } catch {
            decoder.reset();
          }
          const { buffered, held } = decoder;
          expect(held === 0).toBe(buffered === 0);
          expect(held).toBeGreaterThanOrEqual(buffered);
          expect(held).toBeLessThanOrEqual(Math.max(256, 2 * buffered));
        }
      }),
    );
  });

  it('gives the same frames and refusals for any split of random bytes', () => {
    const noisy = fc.array(
      fc.oneof(
        fc.uint8Array({ maxLength: 20 }),
        fc.constantFrom('{"', '{ }', '[[[', ']]]', '{', '}', '"', '\\', '\n', ' '),
      ),
      { maxLength: 30 },
    );
    fc.assert(
      fc.property(
        noisy,
        fc.array(fc.nat(), { maxLength: 20 }),
        fc.constantFrom<FrameDecoderOptions>({}, { maxDepth: 2 }, { oversize: 'skip' }),
        (parts, cuts, options) => {
          const bytes = concat(...parts);
          // A small limit, so oversize frames and long garbage runs happen.
          const whole = decodeAll([bytes], 1 << 20, options);
          expect(decodeAll(chunk(bytes, cuts), 1 << 20, options)).toEqual(whole);
          if (options.oversize === 'skip') {
            const small = decodeAll([bytes], 16, options);
            expect(decodeAll(chunk(bytes, cuts), 16, options)).toEqual(small);
            expect(decodeAll(bytewise(bytes), 16, options)).toEqual(small);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('nestsDeeperThan', () => {
  it('agrees with the decoder on any nesting', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5000 }), fc.constantFrom('[', '{', '[{'), (d, k) => {
        const bytes = utf8.encode(nested(d, k));
        expect(nestsDeeperThan(bytes, MAX_DEPTH)).toBe(d > MAX_DEPTH);
      }),
    );
    expect(nestsDeeperThan(utf8.encode(`{"a":"${'{'.repeat(50)}\\"["}`), 2)).toBe(false);
  });
});
