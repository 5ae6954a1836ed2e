import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { inertRecord } from '../../../src/logger.js';
import {
  atMostChars,
  blank,
  clip,
  inertJson,
  jsonUtf8Bytes,
  mentions,
  visible,
} from '../../../src/protocol/text.js';

/** Every code point a terminal may obey rather than print. */
const CONTROLS = [
  ...Array.from({ length: 0x20 }, (_, i) => i),
  ...Array.from({ length: 0x21 }, (_, i) => 0x7f + i),
  0x061c,
  0x200e,
  0x200f,
  0x2028,
  0x2029,
  0x202a,
  0x202b,
  0x202c,
  0x202d,
  0x202e,
  0x2066,
  0x2067,
  0x2068,
  0x2069,
];
const isControl = (cp: number) => CONTROLS.includes(cp);
const hasControl = (s: string) => [...s].some((ch) => isControl(ch.codePointAt(0)!));

/** Strings dense in controls, escape sequences and ordinary text, in any mix. */
const hostile = fc
  .array(
    fc.oneof(
      fc.string({ unit: 'binary', maxLength: 8 }),
      fc.constantFrom(...CONTROLS.map((cp) => String.fromCodePoint(cp))),
      fc.constantFrom(
        '\x1b[6n',
        '\x1b]0;owned\x07',
        '\x1b]2;owned\x1b\\',
        '\x1bP$qm\x1b\\',
        '\u009b6n',
        '\r\x1b[2K',
        '\b\b\b',
        '\n12:00 bob: ',
      ),
    ),
    { maxLength: 20 },
  )
  .map((parts) => parts.join(''));

describe('visible', () => {
  it('leaves no control, C1 or bidi character, and changes nothing else', () => {
    fc.assert(
      fc.property(hostile, (s) => {
        const shown = visible(s);
        expect(hasControl(shown)).toBe(false);
        if (!hasControl(s)) expect(shown).toBe(s);
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps the text around each control in order', () => {
    fc.assert(
      fc.property(hostile, (s) => {
        const plain = [...s].filter((ch) => !isControl(ch.codePointAt(0)!)).join('');
        // Removing the visible forms gives back the text that was not a control.
        const shown = visible(s).replace(/\^[@-_?]|<U\+[0-9A-F]{4}>/g, '');
        const ownMarkers = plain.replace(/\^[@-_?]|<U\+[0-9A-F]{4}>/g, '');
        expect(shown).toBe(ownMarkers);
      }),
    );
  });

  it('writes C0 and DEL in caret notation, C1 and bidi as <U+XXXX>', () => {
    expect(visible('a\x1b[6nb')).toBe('a^[[6nb');
    expect(visible('\x1b]0;title\x07')).toBe('^[]0;title^G');
    expect(visible('x\r\ny\tz\b\x00\x7f')).toBe('x^M^Jy^Iz^H^@^?');
    expect(visible('\u009b6n \u202eevil\u202c \u2066\u200f')).toBe(
      '<U+009B>6n <U+202E>evil<U+202C> <U+2066><U+200F>',
    );
    expect(visible('héllo 😀 こんにちは')).toBe('héllo 😀 こんにちは');
  });
});

describe('clip', () => {
  it('is visible, bounded, and a prefix of the visible text', () => {
    fc.assert(
      fc.property(hostile, fc.integer({ min: 1, max: 120 }), (s, max) => {
        const clipped = clip(s, max);
        expect(hasControl(clipped)).toBe(false);
        const full = visible(s);
        if (full.length <= max) {
          expect(clipped).toBe(full);
          return;
        }
        const match = /^(.*)\.\.\.\(\+(\d+)\)$/su.exec(clipped);
        expect(match).not.toBeNull();
        const [, kept, left] = match!;
        expect(kept!.length).toBeLessThanOrEqual(max);
        expect(full.startsWith(kept!)).toBe(true);
        expect(Number(left)).toBeGreaterThan(0);
        expect(Number(left)).toBeLessThanOrEqual(s.length);
      }),
      { numRuns: 1000 },
    );
  });

  it('cuts a 64 KB frame of newlines to a short line', () => {
    const clipped = clip('\n'.repeat(65536), 64);
    expect(clipped).toBe(`${'^J'.repeat(32)}...(+65504)`);
  });
});

describe('log records', () => {
  const json = fc.jsonValue();

  it('JSON lines keep their value and lose their raw C1, bidi and separator bytes', () => {
    fc.assert(
      fc.property(fc.dictionary(hostile, fc.oneof(hostile, json)), (record) => {
        const line = JSON.stringify(record);
        const inert = inertJson(line);
        expect(JSON.parse(inert)).toEqual(JSON.parse(line));
        expect(hasControl(inert)).toBe(false);
      }),
    );
  });

  it('pretty records hold no control character in any key or value', () => {
    fc.assert(
      fc.property(fc.dictionary(hostile, fc.oneof(hostile, json)), (record) => {
        const inert = JSON.stringify(inertRecord(record as Parameters<typeof inertRecord>[0]));
        // JSON.stringify would escape C0 again; look at the parsed strings instead.
        const strings: string[] = [];
        JSON.parse(inert, (key, value: unknown) => {
          strings.push(key);
          if (typeof value === 'string') strings.push(value);
          return value;
        });
        expect(strings.some(hasControl)).toBe(false);
      }),
    );
  });
});

describe('atMostChars', () => {
  it('counts characters (code points), whatever units they take', () => {
    // Astral characters, lone surrogates of either half, and plain ones.
    const unit = fc.constantFrom('a', 'é', '한', '😀', '\ud800', '\udc00');
    fc.assert(
      fc.property(fc.string({ unit, maxLength: 40 }), fc.nat(45), (text, max) => {
        expect(atMostChars(text, max)).toBe([...text].length <= max);
      }),
      { numRuns: 3000 },
    );
    const emoji = '😀'.repeat(64);
    expect(emoji.length).toBe(128);
    expect(atMostChars(emoji, 64)).toBe(true);
    expect(atMostChars(`${emoji}a`, 64)).toBe(false);
    // A lone surrogate is one character too.
    expect(atMostChars('\ud800'.repeat(3), 3)).toBe(true);
  });
});

describe('jsonUtf8Bytes', () => {
  it('counts what a string takes in UTF-8 inside a JSON string, for text without controls', () => {
    fc.assert(
      fc.property(
        fc
          .string({ unit: 'grapheme', maxLength: 80 })
          .filter((t) => [...t].every((c) => c.codePointAt(0)! >= 0x20)),
        (text) => {
          expect(jsonUtf8Bytes(text)).toBe(Buffer.byteLength(JSON.stringify(text)) - 2);
        },
      ),
    );
    expect(jsonUtf8Bytes('a"\\é€\u{20000}')).toBe(1 + 2 + 2 + 2 + 3 + 4);
  });
});

describe('blank', () => {
  const nothing = fc.constantFrom(
    ' ',
    '\t',
    '\n',
    '\u0000',
    '\u001b',
    '\u00a0',
    '\u00ad',
    '\u034f',
    '\u0301',
    '\u115f',
    '\u200b',
    '\u200d',
    '\u202e',
    '\u2800',
    '\u3000',
    '\u3164',
    '\ufeff',
    '\ufe0f',
  );
  it('holds text of only spaces, controls and invisible characters blank, and nothing else', () => {
    fc.assert(
      fc.property(
        fc.array(nothing),
        fc.array(nothing),
        fc.constantFrom('a', '*', '가', '😀', '٣', '.', '\u06dd', '\u0600', '\u093e'),
        (before, after, shown) => {
          expect(blank(before.join('') + after.join(''))).toBe(true);
          expect(blank(before.join('') + shown + after.join(''))).toBe(false);
        },
      ),
    );
  });
});

describe('mentions', () => {
  it('finds a nickname as a word, in any letter case, not inside another word or name', () => {
    expect(mentions('Ann, look', 'ann')).toBe(true);
    expect(mentions('@ANN: hi', 'ann')).toBe(true);
    expect(mentions('thanks ann!', 'ann')).toBe(true);
    expect(mentions('annual report', 'ann')).toBe(false);
    expect(mentions('hi joann', 'ann')).toBe(false);
    expect(mentions('ann_2 is here', 'ann')).toBe(false);
    expect(mentions('héllo Zoë', 'zoë')).toBe(true);
    expect(mentions('Zoëy', 'zoë')).toBe(false);
    expect(mentions('hi 李', '李')).toBe(true);
    expect(mentions('anything', '')).toBe(false);
  });

  it("takes a nickname's characters literally, never as a pattern", () => {
    expect(mentions('ask a.b now', 'a.b')).toBe(true);
    expect(mentions('ask axb now', 'a.b')).toBe(false);
    expect(mentions('[bob] said', '[bob]')).toBe(true);
    expect(mentions('b said', '[bob]')).toBe(false);
    expect(mentions('x+ y', 'x+')).toBe(true);
    expect(mentions('xx', 'x+')).toBe(false);
    expect(mentions('a\\b', 'a\\b')).toBe(true);
  });

  it('finds any nickname between non-word characters, and not with letters on both sides (property)', () => {
    const name = fc.string({ minLength: 1, maxLength: 12 }).filter((n) => /^\S+$/u.test(n));
    const edge = fc.constantFrom('', ' ', ', ', '@', '(', '!', '\n');
    fc.assert(
      fc.property(name, edge, edge, fc.string({ maxLength: 20 }), (n, before, after, rest) => {
        expect(mentions(`${rest} ${before}${n}${after}`, n)).toBe(true);
        // Glued inside a word (letters that do not fold into the name's own).
        if (!/[qQ]/u.test(n)) expect(mentions(`q${n}q`, n)).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });
});
