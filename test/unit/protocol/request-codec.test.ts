import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../../src/protocol/codes.js';
import { MAX_DEPTH } from '../../../src/protocol/frame-decoder.js';
import { encodePlainChatLine, serializeLine } from '../../../src/protocol/message-codec.js';
import type { ServerMessage } from '../../../src/protocol/messages.js';
import {
  hasMoreValuesThan,
  MAX_VALUES,
  parseRequestFrame,
  parseRequestMessage,
  parseRequestText,
  refusedFrame,
  toRequest,
} from '../../../src/protocol/request-codec.js';
import { inertJson } from '../../../src/protocol/text.js';

const utf8 = new TextEncoder();

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
  it('parse exactly as JSON.parse does, for any chat text, refusing lone surrogates', () => {
    const unit = fc.oneof(
      fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
      fc.constantFrom('\ud800', '\udfff', '\ud83d\ude00'),
    );
    fc.assert(
      fc.property(fc.string({ unit, maxLength: 40 }), fc.boolean(), (msg, raw) => {
        // JSON.stringify escapes a lone surrogate; a caller may also pass one raw.
        const text = raw ? `{"cmd":"7","msg":"${msg}"}` : JSON.stringify({ cmd: '7', msg });
        if (raw && [...msg].some((c) => c === '"' || c === '\\' || c < ' ')) return;
        const expected = /\p{Cs}/u.test(msg)
          ? {
              ok: false,
              error: { code: ErrorCode.INVALID_FIELD, message: expect.any(String), ref: '7' },
            }
          : { ok: true, request: { cmd: '7', msg } };
        expect(parseRequestText(text)).toEqual(expected);
      }),
      { numRuns: 2000 },
    );
  });

  it('parse chat with a room and a cid as the full parser does, whatever the strings', () => {
    const str = fc.oneof(
      fc.string({ maxLength: 70 }),
      fc.string({
        unit: fc.oneof(
          fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
          fc.constantFrom('\ud800', '"', '\\', '\u0000', '}', ',', '","cid":"', '"}'),
        ),
        maxLength: 8,
      }),
    );
    const opt = fc.option(str, { nil: undefined });
    fc.assert(
      fc.property(str, opt, opt, fc.boolean(), fc.boolean(), (msg, room, cid, raw, tail) => {
        const fields: [string, string | undefined][] = [
          ['msg', msg],
          ['room', room],
          ['cid', cid],
        ];
        const text = raw
          ? `{"cmd":"7"${fields.map(([k, v]) => (v === undefined ? '' : `,"${k}":"${v}"`)).join('')}${tail ? ',"x":1' : ''}}`
          : JSON.stringify({ cmd: '7', msg, room, cid, ...(tail ? { x: 1 } : {}) });
        let reference: unknown;
        try {
          reference = toRequest(JSON.parse(text));
        } catch {
          reference = {
            ok: false,
            error: { code: ErrorCode.MALFORMED_JSON, message: expect.any(String) },
          };
        }
        expect(parseRequestText(text)).toEqual(reference);
      }),
      { numRuns: 5000 },
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

  it('serialise any server message with no raw C1, DEL, bidi or separator character, to the same value', () => {
    const unsafe = /[\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
    const text = fc.string({
      unit: fc.oneof(
        fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }),
        fc.constantFrom('\u009b', '\u0085', '\u007f', '\u202e', '\u2066', '\u2028', '\u061c'),
      ),
      maxLength: 20,
    });
    const message = fc.oneof(
      fc.record({ cmd: fc.constant('70'), from: text, msg: text }),
      fc.record({
        cmd: fc.constant('70'),
        from: text,
        msg: text,
        room: text,
        whisper: fc.constant(true),
      }),
      fc.record({ cmd: fc.constant('90'), code: fc.nat(), message: text, ref: text }),
      fc.record({ cmd: fc.constant('101'), room: text, members: fc.array(text, { maxLength: 4 }) }),
    );
    fc.assert(
      fc.property(message, (m) => {
        const line = serializeLine(m as ServerMessage);
        expect(unsafe.test(line)).toBe(false);
        expect(JSON.parse(line)).toEqual(JSON.parse(JSON.stringify(m)));
      }),
      { numRuns: 2000 },
    );
  });

  it('serialise chat to the same bytes as JSON.stringify', () => {
    // Any code point, plus what JSON must escape or could trip a shortcut:
    // lone surrogates, quotes, backslashes, controls, DEL, line separators.
    const text = (maxLength: number) =>
      fc.string({
        unit: fc.oneof(
          fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
          fc.constantFrom(
            '\ud800',
            '\udfff',
            '"',
            '\\',
            '\u0000',
            '\u001f',
            '\u007f',
            '\u2028',
            '\u009b',
            '\u202e',
          ),
        ),
        maxLength,
      });
    fc.assert(
      fc.property(text(20), text(40), (from, msg) => {
        const m = { cmd: '70', from, msg } as const;
        expect(serializeLine(m)).toBe(`${inertJson(JSON.stringify(m))}\n`);
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

/** Each command's fields and a value of the one accepted type. */
const FIELDS: Record<string, Record<string, fc.Arbitrary<unknown>>> = {
  '0': { nickname: fc.string(), caps: fc.array(fc.string({ maxLength: 32 }), { maxLength: 32 }) },
  '2': { to: fc.string(), msg: fc.string() },
  '5': { newNickname: fc.string() },
  '6': { beginTime: fc.double({ noNaN: true, noDefaultInfinity: true }) },
  '7': { msg: fc.string() },
};

const codeOf = (text: string) => {
  const r = parseRequestText(text);
  return r.ok ? 'ok' : r.error.code;
};

describe('strict request shapes', () => {
  it('refuses a value of any other type in any field of any command as INVALID_FIELD', () => {
    const wrongFor = (field: string) =>
      fc.jsonValue().filter((v) => {
        if (field === 'beginTime') return typeof v !== 'number';
        if (field === 'caps') return !Array.isArray(v) || v.some((c) => typeof c !== 'string');
        return typeof v !== 'string';
      });
    const cases = fc
      .constantFrom(...Object.keys(FIELDS))
      .chain((cmd) =>
        fc.tuple(
          fc.constant(cmd),
          fc.record(FIELDS[cmd]!),
          fc.constantFrom(...Object.keys(FIELDS[cmd]!)),
        ),
      )
      .chain(([cmd, fields, field]) =>
        fc.tuple(fc.constant(cmd), fc.constant(fields), fc.constant(field), wrongFor(field)),
      );
    fc.assert(
      fc.property(cases, ([cmd, fields, field, wrong]) => {
        const good = { cmd, ...fields };
        expect(parseRequestText(JSON.stringify(good)).ok).toBe(true);
        const bad = JSON.stringify({ ...good, [field]: wrong });
        const r = parseRequestText(bad);
        expect(r).toMatchObject({ ok: false, error: { code: ErrorCode.INVALID_FIELD, ref: cmd } });
      }),
      { numRuns: 1000 },
    );
  });

  it('takes beginTime only as a finite number', () => {
    expect(codeOf('{"cmd": "6", "beginTime": 1590314400.123456}')).toBe('ok');
    expect(codeOf('{"cmd": "6", "beginTime": -0}')).toBe('ok');
    for (const bad of ['1e400', '-1e400', '"1.5"', '[1.5]', '{"t": 1.5}', 'null', 'true']) {
      const r = parseRequestText(`{"cmd": "6", "beginTime": ${bad}}`);
      expect(r, bad).toMatchObject({
        ok: false,
        error: { code: ErrorCode.INVALID_FIELD, ref: '6' },
      });
    }
  });

  it('refuses lone surrogates in every text field', () => {
    const lone = ['\\ud800', '\\udfff', 'a\\udc00b', '\\ud800\\ud800'];
    for (const s of lone) {
      for (const text of [
        `{"cmd": "0", "nickname": "${s}"}`,
        `{"cmd": "2", "to": "${s}", "msg": "x"}`,
        `{"cmd": "2", "to": "bob", "msg": "${s}"}`,
        `{"cmd": "5", "newNickname": "${s}"}`,
        `{"cmd": "7", "msg": "${s}"}`,
      ]) {
        expect(codeOf(text), text).toBe(ErrorCode.INVALID_FIELD);
      }
    }
    expect(parseRequestText('{"cmd": "7", "msg": "\\ud83d\\ude00"}')).toEqual({
      ok: true,
      request: { cmd: '7', msg: '😀' },
    });
  });

  it('bounds caps to 32 names of at most 32 characters', () => {
    const caps = (list: string[]) => JSON.stringify({ cmd: '0', nickname: 'a', caps: list });
    expect(codeOf(caps(Array(32).fill('x'.repeat(32))))).toBe('ok');
    expect(codeOf(caps(Array(33).fill('errors')))).toBe(ErrorCode.INVALID_FIELD);
    expect(codeOf(caps(['x'.repeat(33)]))).toBe(ErrorCode.INVALID_FIELD);
  });

  it('lets the last of duplicate keys win, as Python json.loads does', () => {
    expect(parseRequestText('{"cmd": "7", "msg": "a", "msg": "b"}')).toEqual({
      ok: true,
      request: { cmd: '7', msg: 'b' },
    });
    expect(parseRequestText('{"cmd": "7", "cmd": "4"}')).toEqual({
      ok: true,
      request: { cmd: '4' },
    });
  });

  it('never lets __proto__, constructor or prototype keys change a prototype', () => {
    const key = fc.constantFrom(
      '__proto__',
      'constructor',
      'prototype',
      'cmd',
      'msg',
      'nickname',
      'caps',
      'beginTime',
      'toString',
      'hasOwnProperty',
    );
    const value = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom('7', '0', '6', 'x'));
    const before = Object.getOwnPropertyNames(Object.prototype).sort();
    fc.assert(
      fc.property(fc.array(fc.tuple(key, value), { maxLength: 8 }), (entries) => {
        // Built by hand so "__proto__" is a literal key in the JSON text.
        const body = entries.map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`);
        const r = parseRequestText(`{${body.join(', ')}}`);
        if (r.ok) {
          expect(Object.getPrototypeOf(r.request)).toBe(Object.prototype);
          if (r.request.cmd === '0' && r.request.caps !== undefined)
            expect(Object.getPrototypeOf(r.request.caps)).toBe(Array.prototype);
        }
        expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(before);
        expect(({} as Record<string, unknown>).cmd).toBeUndefined();
      }),
      { numRuns: 1000 },
    );
    expect(
      parseRequestText('{"cmd": "7", "msg": "x", "__proto__": {"cmd": "0", "polluted": 1}}'),
    ).toEqual({ ok: true, request: { cmd: '7', msg: 'x' } });
  });

  it('reads only the fields a client sent, even from a polluted Object.prototype', () => {
    const proto = Object.prototype as Record<string, unknown>;
    proto.cmd = '7';
    proto.msg = 'from the prototype';
    proto.beginTime = 1;
    try {
      expect(codeOf('{}')).toBe(ErrorCode.INVALID_FIELD);
      expect(codeOf('{"cmd": "7"}')).toBe(ErrorCode.INVALID_FIELD);
      expect(codeOf('{"cmd": "6"}')).toBe(ErrorCode.INVALID_FIELD);
    } finally {
      delete proto.cmd;
      delete proto.msg;
      delete proto.beginTime;
    }
  });

  it('ignores unknown keys up to the value cap, and refuses a frame of more', () => {
    const fields = (n: number) => Array.from({ length: n }, (_, i) => `"k${i}": ${i}`).join(', ');
    expect(parseRequestText(`{${fields(MAX_VALUES - 1)}, "cmd": "4"}`)).toEqual({
      ok: true,
      request: { cmd: '4' },
    });
    expect(parseRequestText(`{${fields(MAX_VALUES)}, "cmd": "4"}`)).toMatchObject({
      ok: false,
      error: { code: ErrorCode.TOO_MANY_VALUES },
    });
  });
});

describe('nesting depth', () => {
  const deep = (depth: number, open: string, close: string) =>
    utf8.encode(`{"cmd": "6", "beginTime": ${open.repeat(depth - 1)}1${close.repeat(depth - 1)}}`);

  it('refuses whole messages nested deeper than the limit before parsing them', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: MAX_DEPTH + 1, max: 50_000 }),
        fc.constantFrom(['[', ']'], ['{"a":', '}']),
        (depth, [open, close]) => {
          const r = parseRequestMessage(deep(depth, open!, close!));
          expect(r).toMatchObject({ ok: false, error: { code: ErrorCode.NESTED_TOO_DEEP } });
        },
      ),
      { numRuns: 100 },
    );
    expect(parseRequestMessage(deep(3, '[', ']'), 2)).toMatchObject({
      ok: false,
      error: { code: ErrorCode.NESTED_TOO_DEEP },
    });
  });

  it('parses shallow messages exactly as parseRequestFrame does', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        expect(parseRequestMessage(bytes)).toEqual(parseRequestFrame(bytes));
      }),
    );
    const ok = utf8.encode('{"cmd": "6", "beginTime": 1.5}');
    expect(parseRequestMessage(ok)).toEqual(parseRequestFrame(ok));
  });

  it('never throws on deep input that reaches the text parser', () => {
    // Every level is an element: the count refuses it before JSON.parse could recurse.
    const text = new TextDecoder().decode(deep(100_000, '[', ']'));
    expect(codeOf(text)).toBe(ErrorCode.TOO_MANY_VALUES);
    const below = new TextDecoder().decode(deep(MAX_VALUES - 2, '[', ']'));
    expect(codeOf(below)).toBe(ErrorCode.INVALID_FIELD);
  });

  it('maps decoder refusals to error codes', () => {
    expect(refusedFrame('garbage')).toMatchObject({ error: { code: ErrorCode.MALFORMED_JSON } });
    expect(refusedFrame('too-deep')).toMatchObject({ error: { code: ErrorCode.NESTED_TOO_DEEP } });
    expect(refusedFrame('too-large')).toMatchObject({ error: { code: ErrorCode.FRAME_TOO_LARGE } });
  });
});

/** Object fields and array elements in a JSON value, nested ones included. */
function valuesIn(value: unknown): number {
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + 1 + valuesIn(v), 0);
  if (typeof value !== 'object' || value === null) return 0;
  return Object.values(value).reduce((n: number, v) => n + 1 + valuesIn(v), 0);
}

describe('value count', () => {
  it('counts exactly the fields and elements of any JSON text, whatever its strings hold', () => {
    fc.assert(
      fc.property(
        fc.jsonValue({ maxDepth: 4 }),
        fc.integer({ min: 0, max: 12 }),
        fc.constantFrom(undefined, 1, '\t'),
        (value, max, space) => {
          const text = JSON.stringify(value, null, space);
          expect(hasMoreValuesThan(text, max)).toBe(valuesIn(value) > max);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('refuses a frame of many fields or elements before JSON.parse, and keeps the largest real request', () => {
    let many = '{"cmd":"7","msg":"hi"';
    for (let i = 0; many.length < 65_000; i++) many += `,"k${i}":0`;
    expect(parseRequestText(`${many}}`)).toMatchObject({
      ok: false,
      error: { code: ErrorCode.TOO_MANY_VALUES },
    });
    const numbers = `{"cmd":"6","beginTime":1,"a":[${'0,'.repeat(30_000)}0]}`;
    expect(parseRequestText(numbers)).toMatchObject({
      ok: false,
      error: { code: ErrorCode.TOO_MANY_VALUES },
    });
    const since = Array.from({ length: 32 }, (_, i) => ({ room: `r${i}`, epoch: 'e', id: i }));
    const connect = {
      cmd: '0',
      nickname: 'ann',
      caps: Array.from({ length: 32 }, (_, i) => `cap${i}`),
      resume: 'x'.repeat(40),
      since,
      lobby: true,
    };
    expect(valuesIn(connect)).toBeLessThan(MAX_VALUES);
    expect(parseRequestText(JSON.stringify(connect)).ok).toBe(true);
    // A token longer than any this version issues is unknown (a later version's), not invalid.
    const later = parseRequestText(JSON.stringify({ ...connect, resume: 'y'.repeat(300) }));
    expect(later).toMatchObject({ ok: true, request: { cmd: '0', nickname: 'ann' } });
    expect(later.ok && 'resume' in later.request).toBe(false);
    expect(parseRequestText(JSON.stringify({ ...connect, resume: 5 })).ok).toBe(false);
    // Colons and quotes inside strings are text, not fields.
    const text = JSON.stringify({ cmd: '7', msg: '":'.repeat(2000), room: 'a:b' });
    expect(parseRequestText(text)).toMatchObject({ ok: true, request: { cmd: '7' } });
  });
});
