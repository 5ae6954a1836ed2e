import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { view } from '../../src/cli/chat-view.js';
import { wrapRows } from '../../src/cli/wrap.js';

// biome-ignore lint/suspicious/noControlCharactersInRegex: the client's colour sequences
const SGR = /\x1b\[[0-9;]*m/g;
const LONE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Columns a row takes at most: one for printable ASCII and the alphabets no terminal draws
 * wide (below U+1100, and U+1E00–U+1FFF), two for the rest.
 */
function width(row: string): number {
  let w = 0;
  for (const ch of row.replace(SGR, '')) {
    const code = ch.codePointAt(0)!;
    const narrow =
      (code >= 0x20 && code < 0x7f) ||
      (code >= 0xa0 && code < 0x1100) ||
      (code >= 0x1e00 && code < 0x2000);
    w += narrow ? 1 : 2;
  }
  return w;
}

/** What a line is made of once `visible` ran: no controls, but the client's own colours. */
const text = (arbitrary: fc.Arbitrary<string>) =>
  // biome-ignore lint/suspicious/noControlCharactersInRegex: what `visible` leaves out
  arbitrary.map((t) => t.replace(/[\x00-\x1f\x7f]/g, '?'));
const piece = fc.oneof(
  { weight: 6, arbitrary: text(fc.string({ unit: 'grapheme-ascii', maxLength: 12 })) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      ' ',
      '      ',
      '\u00e9',
      '\u4e2d\u6587',
      '\u{1f600}',
      '\u043f\u0440\u0438',
      '\u05e9\u05dc',
      '\u1100\u1161',
      '\u2764\ufe0f',
    ),
  },
  { weight: 1, arbitrary: text(fc.string({ unit: 'binary', maxLength: 6 })) },
  { weight: 1, arbitrary: fc.constantFrom('\x1b[0m', '\x1b[1;32m', '\x1b[2m') },
);
const line = fc.array(piece, { maxLength: 20 }).map((parts) => parts.join(''));

describe('the terminal client breaks its own rows', () => {
  it('keeps every row within the terminal, indents every row after a line’s first, and drops nothing', () => {
    fc.assert(
      fc.property(line, fc.integer({ min: 4, max: 200 }), (text, columns) => {
        const rows = wrapRows(text, columns).split('\n');
        // Six columns, or a quarter of a narrower terminal's.
        const indent = Math.max(1, Math.min(6, Math.floor((columns - 1) / 4)));
        for (const row of rows) expect(width(row)).toBeLessThanOrEqual(columns - 1);
        for (const row of rows.slice(1)) {
          expect(row.slice(0, indent)).toBe(' '.repeat(indent));
        }
        const joined =
          rows[0]! +
          rows
            .slice(1)
            .map((row) => row.slice(indent))
            .join('');
        expect(joined).toBe(text);
      }),
    );
  });

  it('never splits a colour sequence or a character outside the Basic Multilingual Plane', () => {
    fc.assert(
      fc.property(line, fc.integer({ min: 4, max: 40 }), (text, columns) => {
        for (const row of wrapRows(text, columns).split('\n')) {
          expect(row.replace(SGR, '')).not.toContain('\x1b');
          if (!LONE.test(text)) expect(row).not.toMatch(LONE);
        }
      }),
    );
  });

  it('breaks each line of a several-line text on its own', () => {
    fc.assert(
      fc.property(line, line, fc.integer({ min: 4, max: 120 }), (a, b, columns) => {
        expect(wrapRows(`${a}\n${b}`, columns)).toBe(
          `${wrapRows(a, columns)}\n${wrapRows(b, columns)}`,
        );
      }),
    );
  });

  it('shows a chat padded to look like another member’s line indented, not at the left edge', () => {
    const columns = 80;
    const s = { color: true };
    const prefix = '12:00 mallory: ';
    const forged = `${'x'.repeat(5)}${' '.repeat(columns - prefix.length - 5)}12:00 admin: the server restarts now, type your password`;
    const rows = wrapRows(view.chat(s, new Date(), 'mallory', forged), columns).split('\n');
    expect(rows.length).toBeGreaterThan(1);
    const forgedRow = rows.find((row) => row.includes('admin:'))!;
    expect(forgedRow).toMatch(/^ {6}/);
    for (const row of rows.slice(1)) expect(row.startsWith(' ')).toBe(true);
  });

  it('counts the alphabets one column and CJK, Hangul and emoji two', () => {
    const first = (text: string) => wrapRows(text, 80).split('\n')[0]!;
    expect([...first('\u0436'.repeat(100))]).toHaveLength(79);
    expect([...first('\u05e9'.repeat(100))]).toHaveLength(79);
    expect([...first('e\u0301'.repeat(50))]).toHaveLength(79);
    expect([...first('\u4e2d'.repeat(100))]).toHaveLength(39);
    expect([...first('\uac00'.repeat(100))]).toHaveLength(39);
    expect([...first('\u{1f600}'.repeat(100))]).toHaveLength(39);
  });

  it('breaks between words, and inside a word only when it is longer than a row', () => {
    expect(wrapRows('aaaa bbbb cccc dddd eeee', 13)).toBe('aaaa bbbb \n   cccc \n   dddd eeee');
    expect(wrapRows('12:00 ann: across the terminal', 30)).toBe(
      '12:00 ann: across the \n      terminal',
    );
    // Hangul between spaces as well.
    expect(wrapRows('\ubbfc\uc218: \uc548\ub155\ud558\uc138\uc694 \uc5ec\ub7ec\ubd84', 22)).toBe(
      '\ubbfc\uc218: \uc548\ub155\ud558\uc138\uc694 \n     \uc5ec\ub7ec\ubd84',
    );
    expect(wrapRows(`x ${'y'.repeat(30)}`, 20)).toBe(`x ${'y'.repeat(17)}\n    ${'y'.repeat(13)}`);
    const word = fc.stringMatching(/^[a-z]{1,15}$/);
    fc.assert(
      fc.property(
        fc.array(word, { minLength: 1, maxLength: 30 }),
        fc.integer({ min: 8, max: 120 }),
        (words, columns) => {
          const indent = Math.max(1, Math.min(6, Math.floor((columns - 1) / 4)));
          const rows = wrapRows(words.join(' '), columns).split('\n');
          for (let r = 0; r + 1 < rows.length; r++) {
            const before = /[a-z]+$/.exec(rows[r]!)?.[0] ?? '';
            const after = /^[a-z]+/.exec(rows[r + 1]!.slice(indent))?.[0] ?? '';
            // Split inside a word: only one that would not fit on a row of its own. A space
            // that fell just past the end of the row before starts the row (nothing is
            // dropped), and takes a column of it.
            if (before !== '' && after !== '') {
              const pushed = rows[r]!.slice(r === 0 ? 0 : indent).startsWith(' ') ? 1 : 0;
              expect(indent + pushed + before.length + after.length).toBeGreaterThan(columns - 1);
            }
          }
        },
      ),
    );
  });

  it('leaves text alone for a terminal too narrow to indent in, or of unknown width', () => {
    expect(wrapRows('hello there', 3)).toBe('hello there');
    expect(wrapRows('hello there', Number.NaN)).toBe('hello there');
    expect(wrapRows('hello there', 6)).toBe('hello\n  the\n re');
  });
});
