// The web app's pure helpers, in Node: link finding under generated hostile
// text, and the colour search over every hue. web.test.ts checks the same
// things as rendered in Chromium.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  contrast,
  hue,
  MIN_CONTRAST,
  PAGE_BG,
  parseHex,
  readableOn,
} from '../../web/src/colors.js';
import { findLinks, type Piece } from '../../web/src/links.js';

const FRAGMENTS = [
  'https://',
  'http://',
  'HTTPS://',
  'hTtP://',
  'xhttps://',
  'javascript:',
  'JavaScript://%0a',
  'data:text/html,',
  'vbscript:',
  'file:///',
  'example.com',
  'a.b',
  '@',
  ':80',
  '/path',
  '?q=1&r=2',
  '#frag',
  '(',
  ')',
  '[',
  ']',
  '.',
  ',',
  '!',
  "'",
  '"',
  '<',
  '>',
  '`',
  ' ',
  '\n',
  '\t',
  '\u00a0',
  '\u200b',
  '\u202e',
  '%0a',
  '%00',
  'é',
  '😀',
  '\\',
];

const hostileText = fc.oneof(
  fc.string({ maxLength: 300, unit: 'binary' }),
  fc.array(fc.constantFrom(...FRAGMENTS), { maxLength: 40 }).map((parts) => parts.join('')),
  fc
    .array(fc.oneof(fc.constantFrom(...FRAGMENTS), fc.string({ maxLength: 6 })), { maxLength: 30 })
    .map((parts) => parts.join('')),
);

function checkInvariants(text: string, pieces: Piece[]): void {
  // Nothing lost, nothing added, nothing reordered.
  expect(pieces.map((p) => p.text).join('')).toBe(text);
  for (const [i, piece] of pieces.entries()) {
    expect(piece.text).not.toBe('');
    if (piece.href === undefined) {
      // Plain runs are merged, so a link is always between two of them at most.
      if (i + 1 < pieces.length) expect(pieces[i + 1]!.href).not.toBeUndefined();
      continue;
    }
    const url = new URL(piece.href);
    expect(['http:', 'https:']).toContain(url.protocol);
    expect(url.hostname).not.toBe('');
    expect(piece.text).toMatch(/^https?:\/\//i);
    expect(piece.text).not.toMatch(/\s/);
  }
}

describe('findLinks', () => {
  it('keeps every character and links only http(s) addresses, whatever the text', () => {
    fc.assert(
      fc.property(hostileText, (text) => checkInvariants(text, findLinks(text))),
      { numRuns: 3000 },
    );
  });

  it('shows where a link goes: its spelling only when that is the address', () => {
    fc.assert(
      fc.property(hostileText, (text) => {
        for (const p of findLinks(text)) {
          if (p.href === undefined) continue;
          if (p.shown !== p.href) {
            expect(p.shown).toBe(p.text);
            expect([p.text, `${p.text}/`]).toContain(p.href);
          }
        }
      }),
      { numRuns: 2000 },
    );
    const shown = (text: string) => findLinks(text).find((p) => p.href !== undefined)?.shown;
    expect(shown('see https://example.com/a?b=1 now')).toBe('https://example.com/a?b=1');
    expect(shown('see https://example.com')).toBe('https://example.com');
    // A Cyrillic о in the host; a right-to-left override reversing a second address.
    expect(shown('https://g\u043e\u043egle.com/login')).toBe('https://xn--ggle-55da.com/login');
    expect(shown('https://good.example/\u202emoc.live//:sptth')).toBe(
      'https://good.example/%E2%80%AEmoc.live//:sptth',
    );
    // An address with a user name in it goes to the host after the @: no link.
    expect(shown('https://bank.example@evil.example/')).toBeUndefined();
    expect(shown('https://bank.example:x@evil.example/')).toBeUndefined();
  });

  it('never links another scheme', () => {
    const other = fc.constantFrom(
      'javascript:alert(1)',
      'JAVASCRIPT://example.com/%0aalert(1)',
      'data:text/html;base64,PHNjcmlwdD4=',
      'vbscript:msgbox',
      'file:///etc/passwd',
      'ftp://example.com/',
      'blob:https://example.com/x',
      'ws://example.com/',
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 20 }), other, fc.string({ maxLength: 20 }), (a, b, c) => {
        fc.pre(!/https?:\/\//i.test(a + c));
        const text = `${a} ${b} ${c}`;
        const pieces = findLinks(text);
        checkInvariants(text, pieces);
        // "blob:https://…" contains an https address; only that part may be linked.
        for (const p of pieces) if (p.href !== undefined) expect(b).toContain(p.text);
        if (!b.includes('https://')) expect(pieces.every((p) => p.href === undefined)).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it('finds a generated web address between words', () => {
    fc.assert(
      fc.property(fc.webUrl({ validSchemes: ['http', 'https'] }), (url) => {
        const text = `see ${url} now`;
        const pieces = findLinks(text);
        checkInvariants(text, pieces);
        const links = pieces.filter((p) => p.href !== undefined);
        expect(links).toHaveLength(1);
        expect(url.startsWith(links[0]!.text)).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it('leaves sentence punctuation out and balanced brackets in', () => {
    const links = (text: string) => findLinks(text).flatMap((p) => (p.href ? [p.text] : []));
    expect(links('See https://example.com/x.')).toEqual(['https://example.com/x']);
    expect(links('(https://example.com/a), then')).toEqual(['https://example.com/a']);
    expect(links('https://en.wikipedia.org/wiki/Foo_(bar)')).toEqual([
      'https://en.wikipedia.org/wiki/Foo_(bar)',
    ]);
    expect(links('"https://example.com/q?a=1&b=2"!')).toEqual(['https://example.com/q?a=1&b=2']);
    expect(links('https:// nothing, http://, xhttps://example.com')).toEqual([]);
  });

  it('trims as it did when the brackets were counted again for each character', () => {
    // The former trimming, which cost time by the square of a link's length.
    const reference = (url: string): string => {
      const pairs: Record<string, string> = { ')': '(', ']': '[', '}': '{' };
      let end = url.length;
      while (end > 0) {
        const last = url[end - 1]!;
        if (!/[.,;:!?'"»›)\]}]$/.test(last)) break;
        const open = pairs[last];
        if (open !== undefined) {
          const body = url.slice(0, end);
          if (body.split(open).length >= body.split(last).length) break;
        }
        end--;
      }
      return url.slice(0, end);
    };
    const tail = fc.string({ unit: fc.constantFrom(...'()[]{}.,;:!?»›a'), maxLength: 30 });
    fc.assert(
      fc.property(tail, (t) => {
        const url = `https://example.com/${t}`;
        const linked = findLinks(url).find((p) => p.href !== undefined);
        expect(linked?.text).toBe(reference(url));
      }),
      { numRuns: 3000 },
    );
  });

  it('trims a link followed by thousands of closing brackets', () => {
    // A chat of "https://a" and 4,087 ")" took 75 ms to show when the brackets were counted
    // again per character; this, five times as long, took about 2 s then.
    const text = `https://a${')'.repeat(20_000)}`;
    expect(findLinks(text).map((p) => p.text)).toEqual(['https://a', ')'.repeat(20_000)]);
  });
});

describe('nickname colours', () => {
  it('clear AA on both pages, and white avatar letters clear it on theirs, for every hue', () => {
    for (let h = 0; h < 360; h++) {
      for (const bg of [PAGE_BG.light, PAGE_BG.dark, '#ffffff']) {
        const ratio = contrast(parseHex(readableOn(bg, h)), parseHex(bg));
        expect(ratio, `hue ${h} on ${bg}`).toBeGreaterThanOrEqual(MIN_CONTRAST);
      }
    }
  });

  it('give a nickname the same hue in any letter case, and spread names over the hues', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 32 }), (name) => {
        // Case mappings that do not round-trip (ß -> SS) are a different name anyway.
        fc.pre(name.toUpperCase().toLowerCase() === name.toLowerCase());
        expect(hue(name.toUpperCase())).toBe(hue(name));
        expect(hue(name)).toBeGreaterThanOrEqual(0);
        expect(hue(name)).toBeLessThan(360);
      }),
    );
    // 36,000 names in twelve 30° buckets: each within 10% of the 3,000 expected.
    const buckets = new Array<number>(12).fill(0);
    for (let i = 0; i < 36_000; i++) buckets[Math.floor(hue(`user${i}`) / 30)]!++;
    for (const n of buckets) expect(Math.abs(n - 3000)).toBeLessThan(300);
  });
});
