import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { lookalikeKey } from '../../../src/core/lookalike.js';
import {
  addressLike,
  addressSeries,
  checkNickname,
  nicknameKey,
  nicknameLookupKey,
} from '../../../src/core/nickname.js';

// The data the table was generated from, read independently of the table.
const confusables = createRequire(import.meta.url)('unhomoglyph/data.json') as Record<
  string,
  string
>;

// Where a letter and its case partner look like different ASCII letters, one
// key cannot honour both (Greek capital Nu looks like "N", its lower case like
// "v"); the lower case wins. See scripts/gen-confusables.mjs.
const CASE_CONFLICTS = new Set([...'ƼſΝΥ𑢤𑢦𑢵𑢼']);

/** ASCII letter or digit -> every character confusables.txt maps to exactly it. */
const lookalikes = new Map<string, string[]>();
for (const [from, to] of Object.entries(confusables)) {
  if (!/^[A-Za-z0-9]$/.test(to) || CASE_CONFLICTS.has(from)) continue;
  const list = lookalikes.get(to) ?? [];
  list.push(from);
  lookalikes.set(to, list);
}

const same = (a: string, b: string) => expect(nicknameKey(a)).toBe(nicknameKey(b));
const differ = (a: string, b: string) => expect(nicknameKey(a)).not.toBe(nicknameKey(b));
const refused = (name: string) => expect(checkNickname(name).ok).toBe(false);
/** Refused, for the reason `why` names. */
const refusedFor = (name: string, why: RegExp) =>
  expect(checkNickname(name), name).toMatchObject({
    ok: false,
    reason: expect.stringMatching(why),
  });
const accepted = (name: string) =>
  expect(checkNickname(name)).toEqual({ ok: true, nickname: name });

// Characters that render as nothing, or as blank space.
const INVISIBLE: string[] = [
  '\u115f',
  '\u1160',
  '\u3164',
  '\uffa0',
  '\u2800',
  '\u200b',
  '\u200c',
  '\u200d',
  '\u2060',
  '\ufeff',
  '\u034f',
  '\u00ad',
  '\u180e',
  '\ufe00',
  '\ufe0f',
  '\u{e0100}',
  '\u{e01ef}',
  '\u{e0041}',
];
for (let cp = 0; cp <= 0x10ffff; cp += 1) {
  const c = String.fromCodePoint(cp);
  if (cp < 0xd800 || cp > 0xdfff) {
    if (/\p{Default_Ignorable_Code_Point}/u.test(c) && !INVISIBLE.includes(c)) INVISIBLE.push(c);
  }
}

describe('look-alike nicknames share one key', () => {
  it('folds Cyrillic and Greek letters that look Latin', () => {
    same('pаypal', 'paypal'); // Cyrillic а
    same('gοοgle', 'google'); // Greek omicron
    same('ВОВ', 'BOB'); // Cyrillic capitals
    same('ΑΝΝΑ'.toLowerCase(), 'avva'); // Greek lower-case nu looks like v
  });

  it('folds fullwidth and mathematical letters', () => {
    same('ａｎｎ', 'ann');
    same('ＡＮＮ', 'ann');
    same('𝐚𝐧𝐧', 'ann');
    same('𝔭𝒶ỿ𝕡𝕒ℓ', 'paypal');
  });

  it('folds r and t with a hook, a tail, a curl or a stroke, which confusables.txt leaves out', () => {
    same('teache\u027e', 'teacher');
    same('\u01abeacher', 'teacher');
    same('\u0288eache\u027d', 'teacher');
    same('\u01acEACHER', 'teacher');
    same('\u027coot', 'root');
    same('\u01adom', 'tom');
    same('teache\u1d89', 'teacher');
    same('teache\ua7a7', 'teacher');
    same('\u0236eacher', 'teacher');
    same('\u2c66eacher', 'teacher');
    same('\u023eEACHER', 'teacher');
  });

  it('folds a bare vertical stroke to l, as confusables.txt does "|"', () => {
    same('bi|ly', 'billy');
    // Box drawing, its heavy form, and a bracket piece the file maps to it.
    same('bi\u2502ly', 'billy');
    same('bi\u2503ly', 'billy');
    same('bi\u23a2ly', 'billy');
    // Bracket pieces and the Kangxi radical the file maps to the CJK stroke.
    same('bi\u23a5ly', 'billy');
    same('bi\u2f01ly', 'billy');
    for (const stroke of '\u23d0\u23b8\u23b9\u2758\u2759\u258f\u2595\u0964\u3021') {
      same(`bi${stroke}ly`, 'billy');
    }
    same('adm\u00a1n', 'admin');
    // Not the CJK stroke itself, to which the file maps Hangul's vowel ㅣ (U+1175) and
    // through it most syllables: Korean keeps its own keys.
    differ('bi\u4e28ly', 'billy');
    differ('\uac1c', '\uac001'); // 개, 가1
    differ('\uc774', '\u110bl'); // 이, ᄋl
    differ('\ubbfc\uc26c', '\ubbfc\uc2181'); // 민쉬, 민수1
  });

  it('folds small capitals, and kra, which confusables.txt leaves out', () => {
    same('ᴀᴅᴍɪɴ', 'admin');
    same('ᴛᴇᴀᴄʜᴇʀ', 'teacher');
    same('ʙᴏʙ', 'bob');
    same('ɴɪɴᴀ', 'nina');
    same('ʟᴇᴇ', 'lee');
    same('ĸim', 'kim');
    same('ꜰʀᴇᴅ', 'fred');
  });

  it('follows confusables.txt for sequences: rn looks like m', () => {
    same('rnary', 'mary');
    same('Mary', 'rnary');
  });

  it('ignores letter case, and counts I, l, i and 1 as one letter', () => {
    same('Ann', 'ann');
    same('ANN', 'aNn');
    same('Ivan', 'lvan');
    same('Ivan', 'ivan');
    same('bi11', 'bill');
    same('Straße', 'STRASSE');
  });

  it('leaves out the marks on Latin, Greek and Cyrillic letters, which read as the bare name', () => {
    same('vịctim', 'victim'); // U+0323 dot below
    same('vi\u0332ctim', 'victim'); // line under
    same('victim\u1dca', 'victim'); // a mark fonts often draw as nothing
    same('café', 'cafe');
    same('José', 'JOSE');
    same('ὀδυσσεύς', 'οδυσσευς');
    same('йод', 'иод');
    // Not on other letters, where a mark makes another syllable.
    differ('かん', 'がん');
    same('user2\u0323', 'user2');
    same('bob9\u0332', 'bob9');
    differ('कुमार', 'कमार'); // U+0941, a nonspacing vowel sign
    differ('कमल', 'कोमल');
  });

  it('finds a member by any spelling of its marks, as its key does', () => {
    for (const name of ['vịctim', 'José', 'がん']) {
      expect(nicknameLookupKey(name)).toBe(nicknameKey(name));
    }
    expect(nicknameLookupKey('victim')).toBe(nicknameKey('vịctim'));
  });

  it('keeps names that look different apart', () => {
    differ('ann', 'anna');
    differ('がん', 'かん');
    differ('bob', 'rob');
    differ('user2', 'user3');
  });

  it('drops default-ignorable characters from the key', () => {
    same('ann\u200b', 'ann');
    same('a\u2060n\ufe0fn', 'ann');
  });

  it('is stable under NFC/NFD and uses the stored (NFC) name unchanged', () => {
    same('cafe\u0301', 'caf\u00e9');
    expect(checkNickname('cafe\u0301')).toEqual({ ok: true, nickname: 'caf\u00e9' });
    expect(checkNickname('ａｎｎ')).toEqual({ ok: true, nickname: 'ａｎｎ' });
  });

  /** The marks confusables.txt likens to a dot above (U+0307), U+0307 itself first. */
  const DOTS = [
    0x307, 0x358, 0x5b9, 0x5ba, 0x5c1, 0x5c2, 0x5c4, 0x6ec, 0x740, 0x741, 0x7ed, 0x8ea, 0x902,
    0xa02, 0xa82, 0xbcd,
  ].map((cp) => String.fromCodePoint(cp));

  it('refuses a dot above where it hides: on i, j, dotless ı and ȷ, whatever mark draws it', () => {
    for (const dot of DOTS) {
      for (const letter of ['i', '\u0131', 'j', '\u0237', '\u0456']) {
        expect(checkNickname(`${letter}${dot}vy`).ok).toBe(false);
        // Past a mark below on the same letter: ı with a dot below and one above reads as ị.
        expect(checkNickname(`${letter}\u0323${dot}vy`).ok).toBe(false);
      }
    }
    // A dot above is seen on other letters.
    expect(checkNickname('a\u0307vy').ok).toBe(true);
    expect(checkNickname('\u0130smail').ok).toBe(true);
    expect(checkNickname('\u1ecbvy').ok).toBe(true);
  });

  it('refuses any name with a hidden dot added to one of its i or j (property)', () => {
    const name = fc.stringMatching(/^[a-z0-9]{0,8}[ij][a-z0-9]{0,8}$/);
    fc.assert(
      fc.property(name, fc.constantFrom(...DOTS), fc.nat(), (plain, dot, pick) => {
        const at = [...plain.matchAll(/[ij]/g)].map((m) => m.index);
        const i = at[pick % at.length]!;
        const dotted = `${plain.slice(0, i + 1)}${dot}${plain.slice(i + 1)}`;
        expect(checkNickname(dotted).ok).toBe(false);
        expect(checkNickname(plain).ok).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('is idempotent (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => {
        const k = lookalikeKey(s);
        expect(lookalikeKey(k)).toBe(k);
      }),
      { numRuns: 2000 },
    );
  });

  it('does not depend on letter case (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => {
        const k = lookalikeKey(s);
        expect(lookalikeKey(s.toLowerCase())).toBe(k);
        expect(lookalikeKey(s.toUpperCase())).toBe(k);
      }),
      { numRuns: 2000 },
    );
  });

  it('gives an ASCII name and any confusable spelling of it one key (property)', () => {
    const letters = [...lookalikes.keys()];
    const spelled = fc
      .array(fc.constantFrom(...letters), { minLength: 1, maxLength: 16 })
      .chain((chars) =>
        fc.tuple(
          fc.constant(chars.join('')),
          fc
            .tuple(...chars.map((c) => fc.constantFrom(c, ...(lookalikes.get(c) ?? []))))
            .map((cs) => cs.join('')),
        ),
      );
    fc.assert(
      fc.property(spelled, ([plain, disguised]) => {
        expect(nicknameKey(disguised)).toBe(nicknameKey(plain));
      }),
      { numRuns: 2000 },
    );
  });

  it('covers the full confusables.txt mapping to ASCII letters and digits', () => {
    let checked = 0;
    for (const [plain, sources] of lookalikes) {
      for (const source of sources) {
        expect(nicknameKey(source), `U+${source.codePointAt(0)!.toString(16)}`).toBe(
          nicknameKey(plain),
        );
        checked += 1;
      }
    }
    // confusables.txt 13.0 maps about 1350 characters to one ASCII letter or digit.
    expect(checked).toBeGreaterThan(1300);
  });
});

describe('invisible and deceptive nicknames are refused', () => {
  it('refuses Hangul fillers, blank braille, variation selectors and other ignorables', () => {
    for (const c of ['\u115f', '\u1160', '\u3164', '\uffa0', '\u2800', '\ufe0f', '\u{e0100}']) {
      refused(c);
      refused(`ann${c}`);
      refused(`a${c}nn`);
    }
  });

  it('refuses names made only of marks, and marks that sit on nothing', () => {
    refused('\u0301');
    refused('\u0301\u0302');
    refused('\u0301ann');
    refused('-\u0301');
    refused('ann.\u0308');
  });

  it('refuses marks that reach into neighbouring text or fake a dot', () => {
    refused('ann\u20dd'); // combining enclosing circle
    refused('a\u0361b'); // double inverted breve spans two letters
    refused('\u0131\u0307van'); // dotless i + dot above renders as "ivan"
    refused('i\u0307van');
    refused('ann\u0316\u0317\u0318\u0319'); // four stacked marks NFC cannot compose
    accepted('ann\u0316\u0317\u0318');
  });

  it('refuses unassigned and private-use code points', () => {
    refused('ann\u0378');
    refused('ann\ue000');
    refused('ann\ud800');
  });

  it('refuses names with no letter, digit or emoji: dots, stars and modifier letters alone', () => {
    // Nearly invisible, or read as an action's star: "ˑ mallory left" looks like a notice.
    for (const name of [
      '*',
      '·',
      'ˑ',
      '‧',
      '¸',
      'ـ',
      '་',
      '\u0387',
      '\u05f3',
      '˛',
      '⸱',
      '-_-',
      '...',
      // Symbols drawn as stars count as none.
      '✱',
      '✳✻',
      '❋',
      '★',
      '⚹',
      '🟀',
      '🟗',
      // A digit or braille drawn as a dot.
      '٠',
      '۰۰',
      '⠂',
      '⣿',
    ]) {
      refused(name);
    }
    for (const name of ['x', '7', '٣', 'Ⅻ', '😀', '♞', '*x*', '_-a-_', '李', '✱x', 'علي٠']) {
      accepted(name);
    }
  });

  it('refuses names written as the marks clients print: (whisper), [room], and a chat’s "nick:"', () => {
    for (const name of [
      '(whisper)',
      '[physics]',
      '(whisper)teacher',
      '[physics]bob',
      '[AFK]bob',
      'admin:',
      '（whisper）',
      '［lobby］',
      '⟦physics⟧',
      '【physics】',
      '{x}',
      'admin∶',
      '(x)',
      '[1]',
    ]) {
      refusedFor(name, /mark/);
    }
    for (const name of ['bob[m]', 'bob)', 'a:b', '12:30-1', 'x(y)', 'a]b[', 'b(whisper)']) {
      accepted(name);
    }
  });

  it('accepts names in scripts that need combining marks', () => {
    accepted('Nguyễn');
    accepted('नमस्ते');
    accepted('ญี่ปุ่น');
    accepted('שָׁלוֹם');
    accepted('علي');
    accepted('ẹ́kọ́');
    accepted('😀');
  });

  it('inserting invisible characters anywhere is refused or changes nothing (property)', () => {
    const name = fc
      .array(fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCXYZ0123456789_-é'), {
        minLength: 1,
        maxLength: 20,
      })
      .map((cs) => cs.join(''));
    const insertion = fc.tuple(fc.nat(), fc.constantFrom(...INVISIBLE));
    fc.assert(
      fc.property(name, fc.array(insertion, { minLength: 1, maxLength: 4 }), (plain, inserts) => {
        const cps = [...plain];
        for (const [at, c] of inserts) cps.splice(at % (cps.length + 1), 0, c);
        const disguised = cps.join('');
        const checked = checkNickname(disguised);
        if (checked.ok) expect(nicknameKey(checked.nickname)).toBe(nicknameKey(plain));
        else expect(checked.reason).toMatch(/invisible|control|marks/);
      }),
      { numRuns: 2000 },
    );
  });

  it('never throws, and accepted names are NFC and non-empty (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => {
        const checked = checkNickname(s);
        if (checked.ok) {
          expect(checked.nickname).toBe(checked.nickname.normalize('NFC'));
          expect(nicknameKey(checked.nickname).length).toBeGreaterThan(0);
        }
      }),
      { numRuns: 3000 },
    );
  });
});

describe('nicknames that read as an address', () => {
  it('are refused, in any width of their digits, since a BAN of them would ban a network', () => {
    for (const name of [
      '127.0.0.1',
      '0.0.0.0/0',
      '10.0.0.0/8',
      '::1',
      '2001:db8::1',
      '１27.0.0.1',
    ]) {
      refusedFor(name, /address/);
    }
    for (const name of [
      'v1.2.3.4',
      '127.0.0.1x',
      'O.O',
      'a:b',
      'hello.world',
      'x[bob]',
      'team:7',
      'x1.5',
      '*bob*',
      '2130706455',
      'ace:7',
      'x[1.0]',
      '1.5/me',
      'bob@home',
      'v1.2.3',
      '365/24',
      '7/365',
    ]) {
      expect(checkNickname(name), name).toMatchObject({ ok: true });
    }
  });

  it('are refused when they only look like one (O for 0, l or I for 1, digits of other scripts, 。), or are dotted numbers that are no address', () => {
    for (const name of [
      'l27.o.o.l',
      '1O.0.0.0/8',
      'O.O.O.O/O',
      '127。0。0。1',
      '١٢٧.0.0.1',
      '१२७.०.०.१',
      '127.0.0.01',
      '127.1',
      '300.1.1.1',
      '1.2.3',
      '[::ffff:127.0.0.21]',
      '[127.0.0.1]',
      '0x7f.0.0.1',
      '::ffff:127.0.0.26/129',
      '10.*',
      '192.168.*.*',
      '10.0.0.[1-9]',
      '10.0.[0,2].1',
      'fe80::1%eth0',
      '127.0.88.9%eth0',
      '127.0.88.9%25eth0',
      '127.0.88.9/32%x',
      '10.0.0.0/8%eth0',
      '127/8',
      '0/0',
      '24/7',
      '010/8',
      '0x7f/8',
      '*!*@1.2.3.4',
      'eve@10.0.0.1',
    ]) {
      refusedFor(name, /address/);
    }
  });

  it('refuses every IPv4 address and block spelled with look-alike letters or another script’s digits', () => {
    const spellings: Record<string, string[]> = {
      '0': ['0', 'O', 'o', 'Ｏ', '٠', '०', '０'],
      '1': ['1', 'l', 'I', '١', '१', '１'],
      '.': ['.', '。', '．'],
    };
    fc.assert(
      fc.property(
        fc.ipV4(),
        fc.option(fc.integer({ min: 0, max: 32 }), { nil: undefined }),
        fc.infiniteStream(fc.nat()),
        (ip, bits, picks) => {
          const plain = bits === undefined ? ip : `${ip}/${bits}`;
          let name = '';
          for (const ch of plain) {
            const options = spellings[ch] ?? [ch];
            name += options[picks.next().value % options.length];
          }
          expect(checkNickname(name), name).toMatchObject({ ok: false });
        },
      ),
    );
  });

  it('refuses IPv4 addresses as people also write them: bracketed, mapped, in hexadecimal, with a wildcard or a prefix out of range', () => {
    fc.assert(
      fc.property(fc.ipV4(), fc.integer({ min: 0, max: 3 }), (ip, part) => {
        const parts = ip.split('.');
        const hex = parts.map((p, i) => (i === part ? `0x${Number(p).toString(16)}` : p));
        const starred = parts.map((p, i) => (i > part ? '*' : p));
        for (const name of [
          `[${ip}]`,
          `[::ffff:${ip}]`,
          `::ffff:${ip}/${129 + part}`,
          `${ip}/${33 + part}`,
          hex.join('.'),
          starred.join('.'),
        ]) {
          expect(checkNickname(name), name).toMatchObject({ ok: false });
          expect(addressLike(name), name).toBe(true);
        }
      }),
    );
  });

  it('takes ranges and lists of addresses for a BAN of addresses, and no nickname may be one', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.ipV4(), fc.ipV6()),
        fc.oneof(fc.ipV4(), fc.ipV6(), fc.nat({ max: 255 }).map(String)),
        fc.constantFrom(
          '-',
          ',',
          ', ',
          ';',
          '\u2013',
          '\u2014',
          '\u2212',
          '|',
          '&',
          '~',
          '_',
          ' to ',
        ),
        (first, last, between) => {
          const mask = `${first}${between}${last}`;
          expect(addressSeries(mask), mask).toBe(true);
          // Nor may a nickname be one: a BAN of it by name would be refused.
          if ([...mask].length <= 32) expect(checkNickname(mask).ok, mask).toBe(false);
        },
      ),
    );
    // Nicknames with a version or a time in them stay nicknames, as before, and so does text
    // that starts with an address and goes on with no other one (a BAN of it bans that name).
    for (const name of [
      '1.5-beta',
      '3.12-rc1',
      '10.0.0.1x',
      '10.0.0.1-',
      'python-3.12',
      'bob-1.5',
      'meet-12:30',
      'open-24/7',
      'node-js-20.1',
      'x-y',
    ]) {
      expect(checkNickname(name), name).toMatchObject({ ok: true });
      expect(addressSeries(name), name).toBe(false);
    }
  });

  it('takes every nickname it allows for a nickname in a BAN mask', () => {
    // What BAN refuses as "not an address" (moderation-commands.ts) no nickname may be.
    fc.assert(
      fc.property(fc.stringMatching(/^[0-9a-fA-Fx.:/\-,;_~ [\]*%–]{1,24}$/), (text) => {
        if (!checkNickname(text).ok) return;
        expect(addressLike(text) || addressSeries(text), text).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses every dotted IPv4 address and block', () => {
    fc.assert(
      fc.property(
        fc.ipV4(),
        fc.option(fc.integer({ min: 0, max: 32 }), { nil: undefined }),
        (ip, bits) => {
          const name = bits === undefined ? ip : `${ip}/${bits}`;
          expect(checkNickname(name).ok).toBe(false);
        },
      ),
    );
  });
});
