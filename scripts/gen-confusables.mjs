// Generates src/core/lookalike-table.ts, the per-code-point table behind
// lookalikeKey() in src/core/lookalike.ts.
//
//   node scripts/gen-confusables.mjs          # rewrite the table
//   node scripts/gen-confusables.mjs --check  # exit 1 if the committed table is stale
//
// Source: Unicode's confusables.txt (UTS #39) as shipped, mapping for mapping,
// in the npm package `unhomoglyph` (devDependency; data.json is one
// source -> prototype entry per line of confusables.txt). Normalization, case
// and Default_Ignorable_Code_Point come from the Node.js running this script,
// so regenerate after a Node major upgrade as well as after a data update.
//
// Each table entry is the final key of one code point, so lookalikeKey only
// does NFD, drops default-ignorables, maps each code point and reorders marks
// (NFD). The key of a code point is computed here as:
//   1. skeleton step: NFD, drop default-ignorables, map through confusables.txt
//      (characters it does not list through NFKD instead, so fullwidth and
//      other compatibility forms count too), then lower-case, repeated until
//      nothing changes. The skeleton sees the original case (as Ergo does),
//      because folding case first would hide upper-case look-alikes: Cyrillic
//      "В" looks like "B", but its lower case "в" looks like small-capital "ʙ".
//   2. case closure: a name and its upper/lower-case forms must share one key,
//      so each case pair gets one skeleton: the lower-case form's, unless only
//      the upper-case form's is ASCII ("В" -> "b" wins over "в" -> "ʙ"). Where
//      both are ASCII and differ, lower case wins (Greek "Ν"/"ν" -> "v", so
//      capital Nu no longer matches "N"); the script lists these pairs.
//   3. "I" looks like "l" and is the capital of "i": one key cannot honour both
//      unless "i" and "l" are one letter, so every "i" in a key becomes "l".
// The script then checks, over every code point, that the key is idempotent
// and identical for a character and its upper- and lower-case forms.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const confusables = require('unhomoglyph/data.json');
const pkg = require('unhomoglyph/package.json');
const changelog = readFileSync(require.resolve('unhomoglyph/CHANGELOG.md'), 'utf8');
const unicodeVersion = /mapping data to version (\d+\.\d+\.\d+)/.exec(changelog)?.[1] ?? 'unknown';

const OUT = new URL('../src/core/lookalike-table.ts', import.meta.url);
const DI = /\p{Default_Ignorable_Code_Point}/gu;
const MAX_ROUNDS = 20;

/** @type {Map<string, string>} */
const conf = new Map();
for (const [from, to] of Object.entries(confusables)) {
  if ([...from].length !== 1) throw new Error(`multi-code-point source ${from}`);
  conf.set(from, to);
}

// Look-alikes confusables.txt leaves out, as letters for names: small capitals read as the
// capitals that fold to the name ("ᴀᴅᴍɪɴ" beside "admin"), kra, and hooked r and t. Added where the file
// has no mapping of its own, or one to a character that is no ASCII letter (small capital M
// to turned m). Not r rotunda: the file has its capital look like "2".
const EXTRA = {
  ᴀ: 'a',
  ʙ: 'b',
  ᴄ: 'c',
  ᴅ: 'd',
  ᴇ: 'e',
  ꜰ: 'f',
  ɢ: 'g',
  ʜ: 'h',
  ɪ: 'i',
  ᴊ: 'j',
  ᴋ: 'k',
  ʟ: 'l',
  ᴍ: 'm',
  ɴ: 'n',
  ᴏ: 'o',
  ᴘ: 'p',
  ꞯ: 'q',
  ʀ: 'r',
  ꜱ: 's',
  ᴛ: 't',
  ᴜ: 'u',
  ᴠ: 'v',
  ᴡ: 'w',
  ʏ: 'y',
  ᴢ: 'z',
  ĸ: 'k',
  // r and t with a hook, a tail, a leg, a curl or a stroke, which many fonts draw close to
  // the plain letter.
  ɼ: 'r',
  ɽ: 'r',
  ɾ: 'r',
  ᶉ: 'r',
  ꞧ: 'r',
  ꭉ: 'r',
  ꭋ: 'r',
  ꭌ: 'r',
  ƫ: 't',
  ƭ: 't',
  ʈ: 't',
  ȶ: 't',
  ⱦ: 't',
  // A bare vertical stroke reads as l, as "|" does, which the file maps to it; these it maps
  // to a class of their own (box drawing's "│"), to the CJK stroke "丨", or not at all. Not
  // "丨" itself: the file maps Hangul's vowel ㅣ to it, and through it most syllables ("개"
  // would be "가1").
  '│': 'l',
  '⎜': 'l',
  '⎟': 'l',
  '⎢': 'l',
  '⎥': 'l',
  '⎪': 'l',
  '⎮': 'l',
  '㇑': 'l',
  '⼁': 'l',
  '⏐': 'l',
  '⎸': 'l',
  '⎹': 'l',
  '❘': 'l',
  '❙': 'l',
  '▏': 'l',
  '▕': 'l',
  '।': 'l',
  〡: 'l',
  // An inverted exclamation mark is an i with its dot on top.
  '¡': 'i',
};
const extras = [];
for (const [from, to] of Object.entries(EXTRA)) {
  if (/^[a-z0-9]+$/i.test(conf.get(from) ?? '')) continue;
  conf.set(from, to);
  extras.push(from);
}
console.log(`look-alikes added to confusables.txt's: ${extras.join(' ')}`);

const cps = (s) => [...s];
const lower = (s) =>
  cps(s)
    .map((c) => c.toLowerCase())
    .join('');

// A character's confusables.txt prototype wins over its compatibility
// decomposition: long s "ſ" looks like "f", though NFKD makes it "s".
function step(s) {
  const t = s.normalize('NFD').replace(DI, '');
  const mapped = cps(t).map((c) => conf.get(c) ?? c.normalize('NFKD'));
  return lower(mapped.join('')).normalize('NFD').replace(DI, '');
}
function fix(fn, s) {
  for (let i = 0; i < MAX_ROUNDS; i++) {
    const next = fn(s);
    if (next === s) return s;
    s = next;
  }
  throw new Error(`no fixpoint for ${JSON.stringify(s)}`);
}
const skeleton = (s) => fix(step, s);

// Every scalar value that survives NFD unchanged and is not ignorable: the
// only code points lookalikeKey ever looks up.
const domain = [];
for (let cp = 0; cp <= 0x10ffff; cp++) {
  if (cp >= 0xd800 && cp <= 0xdfff) continue;
  const c = String.fromCodePoint(cp);
  DI.lastIndex = 0;
  if (c.normalize('NFD') !== c || DI.test(c)) continue;
  domain.push(c);
}
DI.lastIndex = 0;

// --- case closure: one skeleton per case class
const isAscii = (s) => cps(s).every((ch) => ch.codePointAt(0) < 0x80);
const conflicts = [];
function choose(c) {
  const upper = c.toUpperCase();
  const a = skeleton(upper.toLowerCase());
  const b = skeleton(upper);
  if (a === b) return a;
  if (isAscii(b) && !isAscii(a)) return b;
  if (isAscii(a) && isAscii(b) && c === upper) conflicts.push(`${c}: ${a} / ${b}`);
  return a;
}
// "I" looks like "l" but is the capital of "i": with one key for both case and
// look-alikes, "i" and "l" must be one letter.
const merge = (s) => s.replaceAll('i', 'l');
const keyOf = (c) =>
  fix(
    (s) => merge(cps(s.normalize('NFD').replace(DI, '')).map(choose).join('')).normalize('NFD'),
    c,
  );

/** @type {Map<number, string>} */
const table = new Map();
for (const c of domain) {
  const k = keyOf(c);
  if (k !== c) table.set(c.codePointAt(0), k);
}

// --- the runtime algorithm, as in src/core/lookalike.ts, to check the result
function runtimeKey(text) {
  let out = '';
  for (const ch of text.normalize('NFD').replace(DI, '')) {
    out += table.get(ch.codePointAt(0)) ?? ch;
  }
  return out.normalize('NFD');
}
let bad = 0;
for (let cp = 0; cp <= 0x10ffff; cp++) {
  if (cp >= 0xd800 && cp <= 0xdfff) continue;
  const c = String.fromCodePoint(cp);
  const k = runtimeKey(c);
  const problems = [];
  if (runtimeKey(k) !== k) problems.push('not idempotent');
  if (runtimeKey(c.toLowerCase()) !== k) problems.push('lower case differs');
  if (runtimeKey(c.toUpperCase()) !== k) problems.push('upper case differs');
  if (problems.length > 0) {
    bad++;
    if (bad <= 20)
      console.error(`U+${cp.toString(16)} ${JSON.stringify(k)}: ${problems.join(', ')}`);
  }
}
if (bad > 0) throw new Error(`${bad} code points break the key's invariants`);

// --- encode: entries sorted by code point, "<delta>:<target code points>",
// numbers in base 36, target code points separated by "."; an empty target
// (a character that vanishes) is allowed.
const entries = [...table.entries()].sort((a, b) => a[0] - b[0]);
const parts = [];
let prev = 0;
for (const [cp, target] of entries) {
  const t = cps(target).map((ch) => ch.codePointAt(0).toString(36));
  parts.push(`${(cp - prev).toString(36)}:${t.join('.')}`);
  prev = cp;
}
const encoded = parts.join(',');
const lines = [];
for (let i = 0; i < encoded.length; i += 96) lines.push(encoded.slice(i, i + 96));

const source = `// Generated by scripts/gen-confusables.mjs; do not edit.
// Data: Unicode confusables.txt ${unicodeVersion} (UTS #39), from the npm package
// unhomoglyph ${pkg.version}; case mapping, NFKD and Default_Ignorable_Code_Point from
// Node.js ${process.versions.node} (Unicode ${process.versions.unicode}).
// ${entries.length} entries: "<code point delta>:<key code points>" in base 36, comma-separated.

export const CONFUSABLES_VERSION = '${unicodeVersion}';

export const LOOKALIKE_TABLE = \`
${lines.join('\n')}
\`;
`;

if (process.argv.includes('--check')) {
  const current = readFileSync(OUT, 'utf8');
  if (current !== source) {
    console.error('src/core/lookalike-table.ts is stale: run node scripts/gen-confusables.mjs');
    process.exit(1);
  }
  console.log('lookalike-table.ts is up to date');
} else {
  writeFileSync(OUT, source);
  console.log(
    `case pairs whose skeletons are different ASCII (lower case won): ${conflicts.join('; ')}`,
  );
  console.log(`wrote ${entries.length} entries (${source.length} bytes)`);
}
