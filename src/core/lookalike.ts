/**
 * Look-alike folding: two strings that a reader could mistake for each other
 * get the same key. The key is a UTS #39 skeleton (confusables.txt), extended
 * with compatibility decompositions (NFKD) so fullwidth, mathematical and other
 * compatibility forms count as their plain letters, with default-ignorable
 * characters dropped and letter case folded. See scripts/gen-confusables.mjs for how the table is built and which
 * trade-offs it makes (notably: "i", "I", "l" and "1" are one letter).
 *
 * A key is for comparison only; never show it.
 */
import { LOOKALIKE_TABLE } from './lookalike-table.js';

const IGNORABLE = /\p{Default_Ignorable_Code_Point}/gu;

/**
 * What a code point folds to, and the marks (\p{M}) at its start and end: the run of marks
 * a key holds is counted as the key is made, from these, not by scanning the key again (it
 * is up to 18 times the name's length, and \p{M} costs some 40 ns a character of it).
 */
interface Folded {
  readonly text: string;
  /** Marks before its first other character (all of them when `whole`). */
  readonly lead: number;
  /** Marks after its last other character. */
  readonly trail: number;
  /** The longest run of marks it holds. */
  readonly longest: number;
  /** Whether it is marks only (or nothing), so a run goes on through it. */
  readonly whole: boolean;
}

const MARK = /\p{M}/u;

function folded(text: string): Folded {
  const marks = [...text].map((ch) => MARK.test(ch));
  const lead = marks.indexOf(false);
  const trail = marks.lastIndexOf(false);
  let longest = 0;
  let run = 0;
  for (const mark of marks) {
    run = mark ? run + 1 : 0;
    longest = Math.max(longest, run);
  }
  return lead === -1
    ? { text, lead: marks.length, trail: marks.length, longest, whole: true }
    : { text, lead, trail: marks.length - 1 - trail, longest, whole: false };
}

function decode(encoded: string): Map<number, Folded> {
  const table = new Map<number, Folded>();
  let cp = 0;
  for (const entry of encoded.replace(/\s+/g, '').split(',')) {
    if (entry === '') continue;
    const colon = entry.indexOf(':');
    cp += Number.parseInt(entry.slice(0, colon), 36);
    const target = entry.slice(colon + 1);
    table.set(
      cp,
      folded(
        target === ''
          ? ''
          : String.fromCodePoint(...target.split('.').map((n) => Number.parseInt(n, 36))),
      ),
    );
  }
  return table;
}

const TABLE = decode(LOOKALIKE_TABLE);

/**
 * Every character canonical ordering moves is a mark (\p{M}), and NFD sorts a run of them in
 * time by the square of its length: some 1 ms for a run of 1,000, where a whole name of
 * U+FDFA (folding to 18 characters each) takes a fifth of that.
 */
const MARK_RUN = /\p{M}+/gu;

/** Whether `text` holds more than `most` marks in a row (code points), in one pass. */
export function marksInRow(text: string, most: number): boolean {
  if (most === Number.POSITIVE_INFINITY) return false;
  MARK_RUN.lastIndex = 0;
  for (let m = MARK_RUN.exec(text); m !== null; m = MARK_RUN.exec(text)) {
    if (m[0].length > most && [...m[0]].length > most) return true;
  }
  return false;
}

/** The key under which look-alike strings are equal (idempotent, case-insensitive). */
export function lookalikeKey(text: string): string {
  return lookalikeKeyWithin(text, Number.POSITIVE_INFINITY)!;
}

/**
 * lookalikeKey, or undefined when `text`, or what folding makes of it before its last
 * normalisation, holds more than `most` marks in a row: no run of a name people may take
 * is that long (nickname.ts), and the check costs one pass where NFD of the run would cost
 * its square. Dropping ignorables (and folding a few symbols to marks) can join short runs
 * into a long one, so the folded text is checked too, counted as it is made (Folded).
 */
export function lookalikeKeyWithin(text: string, most: number): string | undefined {
  if (marksInRow(text, most)) return undefined;
  const counting = most !== Number.POSITIVE_INFINITY;
  const decomposed = text.normalize('NFD').replace(IGNORABLE, '');
  let key = '';
  // The marks in a row at the end of the key so far.
  let run = 0;
  for (const ch of decomposed) {
    // Every code point is a scalar value here; lone surrogates pass unchanged.
    const to = TABLE.get(ch.codePointAt(0)!);
    key += to?.text ?? ch;
    if (!counting) continue;
    if (to === undefined) {
      // No mark comes before U+0300.
      run = ch >= '\u0300' && MARK.test(ch) ? run + 1 : 0;
    } else if (to.whole) {
      run += to.lead;
    } else {
      if (run + to.lead > most || to.longest > most) return undefined;
      run = to.trail;
    }
    if (run > most) return undefined;
  }
  return key.normalize('NFD');
}
