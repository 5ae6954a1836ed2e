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

function decode(encoded: string): Map<number, string> {
  const table = new Map<number, string>();
  let cp = 0;
  for (const entry of encoded.replace(/\s+/g, '').split(',')) {
    if (entry === '') continue;
    const colon = entry.indexOf(':');
    cp += Number.parseInt(entry.slice(0, colon), 36);
    const target = entry.slice(colon + 1);
    table.set(
      cp,
      target === ''
        ? ''
        : String.fromCodePoint(...target.split('.').map((n) => Number.parseInt(n, 36))),
    );
  }
  return table;
}

const TABLE = decode(LOOKALIKE_TABLE);

/** The key under which look-alike strings are equal (idempotent, case-insensitive). */
export function lookalikeKey(text: string): string {
  const decomposed = text.normalize('NFD').replace(IGNORABLE, '');
  let key = '';
  for (const ch of decomposed) {
    // Every code point is a scalar value here; lone surrogates pass unchanged.
    key += TABLE.get(ch.codePointAt(0)!) ?? ch;
  }
  return key.normalize('NFD');
}
