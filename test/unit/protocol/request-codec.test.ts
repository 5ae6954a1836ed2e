import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../../src/protocol/codes.js';
import { encodePlainChatLine, serializeLine } from '../../../src/protocol/message-codec.js';
import { parseRequestFrame, parseRequestText } from '../../../src/protocol/request-codec.js';

describe('request codec', () => {
  it('accepts every course request as the Python client writes it', () => {
    const cases = [
      ['{"cmd": "0", "nickname": "ann"}', { cmd: '0', nickname: 'ann' }],
      ['{"cmd": "1"}', { cmd: '1' }],
      ['{"cmd": "2", "to": "bob", "msg": "hi"}', { cmd: '2', to: 'bob', msg: 'hi' }],
      ['{"cmd": "3"}', { cmd: '3' }],
      ['{"cmd": "4"}', { cmd: '4' }],
      ['{"cmd": "5", "newNickname": "cat"}', { cmd: '5', newNickname: 'cat' }],
      [
        '{"cmd": "6", "beginTime": 1590000000123.4568}',
        { cmd: '6', beginTime: 1590000000123.4568 },
      ],
      ['{"cmd": "7", "msg": "\\ud55c"}', { cmd: '7', msg: '한' }],
    ] as const;
    for (const [text, request] of cases) {
      expect(parseRequestText(text)).toEqual({ ok: true, request });
    }
  });

  it('keeps caps only when a client sends them', () => {
    expect(parseRequestText('{"cmd":"0","nickname":"a","caps":["errors"]}')).toEqual({
      ok: true,
      request: { cmd: '0', nickname: 'a', caps: ['errors'] },
    });
  });

  it('names what is wrong with an invalid request', () => {
    const code = (text: string) => {
      const r = parseRequestText(text);
      return r.ok ? 'ok' : r.error.code;
    };
    expect(code('not json')).toBe(ErrorCode.MALFORMED_JSON);
    expect(code('[1,2]')).toBe(ErrorCode.NOT_AN_OBJECT);
    expect(code('null')).toBe(ErrorCode.NOT_AN_OBJECT);
    expect(code('{"cmd":7}')).toBe(ErrorCode.INVALID_FIELD);
    expect(code('{"cmd":"77"}')).toBe(ErrorCode.UNKNOWN_COMMAND);
    expect(code('{"cmd":"7"}')).toBe(ErrorCode.INVALID_FIELD);
    expect(code('{"cmd":"7","msg":5}')).toBe(ErrorCode.INVALID_FIELD);
    expect(code('{"cmd":"2","to":"x"}')).toBe(ErrorCode.INVALID_FIELD);
    expect(code('{"cmd":"6"}')).toBe(ErrorCode.INVALID_FIELD);
    expect(code('{"cmd":"0","nickname":"a","caps":"errors"}')).toBe(ErrorCode.INVALID_FIELD);
    expect(parseRequestFrame(Uint8Array.of(0x7b, 0xff, 0x7d))).toMatchObject({
      ok: false,
      error: { code: ErrorCode.INVALID_ENCODING },
    });
  });

  it('echoes an RTT float bit-exactly through a parse and re-encode', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (t) => {
        const r = parseRequestText(JSON.stringify({ cmd: '6', beginTime: t }));
        expect(r.ok).toBe(true);
        if (!r.ok || r.request.cmd !== '6') return;
        const back = JSON.parse(JSON.stringify({ beginTime: r.request.beginTime })).beginTime;
        expect(Object.is(back, t === 0 ? 0 : t) || back === t).toBe(true);
      }),
    );
  });

  it('never throws, whatever the bytes or JSON', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const r = parseRequestFrame(bytes);
        expect(typeof r.ok).toBe('boolean');
      }),
    );
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const r = parseRequestText(JSON.stringify(value));
        expect(typeof r.ok).toBe('boolean');
      }),
    );
  });
});

describe('fast paths', () => {
  it('parse exactly as JSON.parse does, for any chat text', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (msg) => {
        const text = JSON.stringify({ cmd: '7', msg });
        expect(parseRequestText(text)).toEqual({ ok: true, request: { cmd: '7', msg } });
      }),
      { numRuns: 2000 },
    );
  });

  it('leave look-alikes that are not plain chat to the full parser', () => {
    expect(parseRequestText('{"cmd":"7","msg":"a"b"}').ok).toBe(false);
    expect(parseRequestText('{"cmd":"7","msg":"a\\\\"}')).toEqual({
      ok: true,
      request: { cmd: '7', msg: 'a\\' },
    });
    expect(parseRequestText('{"cmd":"7","msg":"x","to":"y"}')).toEqual({
      ok: true,
      request: { cmd: '7', msg: 'x' },
    });
    expect(parseRequestText('{"cmd":"7","msg":"tab\there"}').ok).toBe(false);
  });

  it('serialise chat to the same bytes as JSON.stringify', () => {
    // Any code point, plus what JSON must escape or could trip a shortcut:
    // lone surrogates, quotes, backslashes, controls, DEL, line separators.
    const text = (maxLength: number) =>
      fc.string({
        unit: fc.oneof(
          fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
          fc.constantFrom('\ud800', '\udfff', '"', '\\', '\u0000', '\u001f', '\u007f', '\u2028'),
        ),
        maxLength,
      });
    fc.assert(
      fc.property(text(20), text(40), (from, msg) => {
        const m = { cmd: '70', from, msg } as const;
        expect(serializeLine(m)).toBe(`${JSON.stringify(m)}\n`);
      }),
      { numRuns: 2000 },
    );
  });

  it('encode plain chat straight to the same bytes as serialise-then-UTF-8, or decline', () => {
    const utf8 = new TextEncoder();
    const printable = (maxLength: number) =>
      fc.string({
        unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
        maxLength,
      });
    const anything = (maxLength: number) =>
      fc.oneof(
        printable(maxLength),
        fc.string({
          unit: fc.oneof(
            fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
            fc.constantFrom('\ud800', '"', '\\', '\u0000', '\u007f', 'é', '한'),
          ),
          maxLength,
        }),
      );
    fc.assert(
      fc.property(anything(20), anything(60), fc.boolean(), (from, msg, whisper) => {
        const m = whisper
          ? ({ cmd: '70', from, msg, whisper: true } as const)
          : ({ cmd: '70', from, msg } as const);
        const fast = encodePlainChatLine(m);
        const plain = !whisper && /^[\x20-\x21\x23-\x5b\x5d-\x7e]*$/.test(from + msg);
        expect(fast !== undefined).toBe(plain);
        if (fast !== undefined) expect(fast).toEqual(utf8.encode(serializeLine(m)));
      }),
      { numRuns: 3000 },
    );
    // Views handed out stay intact when the shared slab fills and is replaced.
    const views = Array.from({ length: 3000 }, (_, i) => {
      const m = { cmd: '70', from: `u${i}`, msg: `message ${i} ${'x'.repeat(i % 50)}` } as const;
      return [encodePlainChatLine(m), utf8.encode(serializeLine(m))] as const;
    });
    for (const [fast, expected] of views) expect(fast).toEqual(expected);
    expect(encodePlainChatLine({ cmd: '10', users: [] })).toBeUndefined();
  });
});
