/**
 * Nickname rules. Nicknames are stored and shown in Unicode NFC, as typed, and
 * are unique by their look-alike key (lookalike.ts): names that differ only in
 * letter case, in compatibility forms (fullwidth, mathematical letters) or in
 * characters that look alike ("pаypal" with a Cyrillic "а") are one name.
 * Names that hide or fake characters are refused outright.
 */
import { parseAddressMask } from './addresses.js';
import { lookalikeKey, lookalikeKeyWithin, marksInRow } from './lookalike.js';

export const MAX_NICKNAME_LENGTH = 32;

/**
 * The longest name a lookup folds (UTF-16 units). Folding costs time by a
 * string's length times its expansion (U+FDFA folds to 18 characters), and a
 * frame allows 64 KiB of name; a nickname (32 characters) or a room name (64),
 * even in decomposed, mathematical or mark-laden spelling, stays far below
 * this, so a longer name is nobody and is not folded.
 */
export const MAX_LOOKUP_LENGTH = 1024;

/**
 * The most marks in a row a name may hold, as sent and as folded: NFC and NFD sort a run
 * in time by the square of its length (1,000 marks of two classes, alternating, took some
 * 1 ms to fold). A name people may take holds at most MAX_MARKS_IN_A_ROW marks in a row
 * (NFC), which any canonical spelling makes at most 27 (a letter decomposes into itself and
 * up to three marks, a mark into up to three), and no more than this many once folded
 * (checkName): every such name is found in any spelling, and a longer run is nobody.
 */
const MAX_LOOKUP_MARKS = 32;

/** The most combining marks in a row in a name people may take (see MAX_LOOKUP_MARKS). */
export const MAX_MARKS_IN_A_ROW = 8;
const MARKS_IN_A_ROW = new RegExp(`\\p{M}{${MAX_MARKS_IN_A_ROW + 1}}`, 'u');

// Whitespace, control and format characters (including zero-width joiners) are
// refused: they make names that print identically or break line-based clients.
const FORBIDDEN = /[\s\p{Cc}\p{Cf}\p{Zs}\p{Zl}\p{Zp}]/u;

// Characters that render as nothing (default-ignorables: variation selectors,
// Hangul fillers, joiners...), the blank braille pattern, and code points
// whose rendering is undefined (unassigned, private use, lone surrogates).
const INVISIBLE = /[\p{Default_Ignorable_Code_Point}\u2800\p{Cn}\p{Co}\p{Cs}]/u;

// A combining mark must sit on a letter or number (possibly after other marks):
// one at the start, or on punctuation or a symbol, draws over whatever a client
// prints next to the name.
const LOOSE_MARK = /(?:^|[^\p{L}\p{N}\p{M}])\p{M}/u;

// Enclosing marks and marks that span two characters reach into the
// neighbouring text.
// biome-ignore lint/suspicious/noMisleadingCharacterClass: these classes list combining marks on purpose
const OVERREACHING_MARK = /[\p{Me}\u035C-\u0362\u1DCD\u1DFC]/u;

/** U+0307 (dot above) and the marks confusables.txt likens to it. */
const DOTS_ABOVE =
  '\u0307\u0358\u05B9\u05BA\u05C1\u05C2\u05C4\u06EC\u0740\u0741\u07ED\u08EA\u0902\u0A02\u0A82\u0BCD';

// A dot above a letter that already shows one (i, j) or on dotless i or j
// renders as the plain letter, also past other marks on the letter: "ı͘vy"
// reads as "ivy", and its look-alike key is not ivy's.
const HIDDEN_DOT = new RegExp(`[\\p{Soft_Dotted}\\u0131\\u0237]\\p{M}*[${DOTS_ABOVE}]`, 'u');

// More than three stacked non-spacing marks on one letter ("zalgo" text) spill
// over neighbouring lines and letters. Three covers Hebrew, Thai, Vietnamese.
const MARK_STACK = /\p{Mn}{4}/u;

export type NicknameCheck = { ok: true; nickname: string } | { ok: false; reason: string };

/** A letter (not a modifier letter such as "ˑ"), a digit of any kind, or a symbol such as an emoji. */
const SOMETHING_TO_READ = /[\p{Lu}\p{Ll}\p{Lt}\p{Lo}\p{N}\p{So}]/u;
/**
 * Symbols drawn as stars and asterisks ("✱", "★", "⚹", "🟀"), which read as an action's star,
 * and digits and braille drawn as a dot or a few ("٠", "۰", "⠂"), nearly invisible.
 */
const STARS = /[\u2605\u2606\u2722-\u274b\u26b9\u{1f7c0}-\u{1f7d8}\u0660\u06f0\u2800-\u28ff]/gu;

/**
 * Names written as the marks clients print around names: `(whisper)` before a whisper,
 * `[room]` before a line from another room, `nick:` before every chat. Any name opening
 * with a bracket of any kind: `(whisper)teacher` printed `(whisper)teacher: …`, a space
 * away from a real whisper.
 */
const MARK_SHAPED = /^\p{Ps}|:$/u;

export function checkNickname(raw: string): NicknameCheck {
  const checked = checkName(raw, MAX_NICKNAME_LENGTH, 'nickname');
  // Dots, stars and marks alone ("·", "*", "ˑ"), nearly invisible or read as an action's
  // star, make a member's chats look like the server's notices or another member's actions.
  if (checked.ok && !SOMETHING_TO_READ.test(checked.nickname.replace(STARS, ''))) {
    return { ok: false, reason: 'nickname must contain a letter, a digit or an emoji' };
  }
  // A BAN mask that reads as an address bans that address: a nickname a reader takes for one
  // (in any width or script of its digits, "1O.0.0.0/8" with a letter O) could not be banned
  // by what the operator reads, and that BAN would ban a network. Dotted numbers that are no
  // address ("127.0.0.01") a BAN refuses, so no nickname may be one either.
  if (checked.ok) {
    const digits = digitsRead(checked.nickname);
    if (parseAddressMask(lettersRead(digits)) !== undefined || addressRead(digits)) {
      return { ok: false, reason: 'nickname must not read as an IP address or network' };
    }
    // A BAN refuses such a mask (it reads as those addresses): the nickname could not be banned.
    if (addressSeries(checked.nickname)) {
      return { ok: false, reason: 'nickname must not read as a range or list of IP addresses' };
    }
  }
  // A member's chats under such a name read as a whisper, a line from another room or
  // someone else's chat ("(whisper): teacher: send me your password"), in any spelling.
  if (
    checked.ok &&
    (MARK_SHAPED.test(checked.nickname) || MARK_SHAPED.test(nicknameKey(checked.nickname)))
  ) {
    return {
      ok: false,
      reason: 'nickname must not be written as a mark: opening with a bracket, or ending in ":"',
    };
  }
  return checked;
}

/**
 * Whether `text` is written as addresses are, whether or not it is one confab takes: only
 * digits of any script, dots, colons and slashes, with a dot or colon (`127.0.0.01`); or in
 * brackets (`[::1]`), with hexadecimal parts (`0x7f.0.0.1`), IPv6's letters and colons, or a
 * wildcard (`10.*`). A BAN of such a text that is no address had banned a nickname nobody
 * had, and left the address in.
 */
export function addressLike(text: string): boolean {
  return addressRead(digitsRead(text));
}

/** addressLike of a text digitsRead has read already. */
function addressRead(digits: string): boolean {
  // IRC's nick!user@host: the host is what a reader takes the ban for.
  const at = digits.lastIndexOf('@');
  return addressShaped(digits) || (at >= 0 && addressShaped(digits.slice(at + 1)));
}

/**
 * What separates the addresses of a range or a list: a run of anything but letters, digits
 * and what addresses are written with (a dash of any kind, commas, spaces), or "to".
 */
const SERIES_BREAK = /(?:\s*\bto\b\s*|[^\p{L}\p{N}.:/%[\]*])+/iu;

/**
 * Whether a text is a range or a list of addresses (`10.0.0.1-10.0.0.9`, `10.0.0.1-9`,
 * `10.0.0.1, 10.0.0.2`, `10.0.0.1 to 10.0.0.9`, as IRC's host `*!*@10.0.0.1-9` too): an
 * address, then past a separator another, a part of one or a wildcard. A reader takes a BAN
 * of such a mask for those addresses, which a nickname ban of the text would leave in; so
 * no nickname may be one either, or it could not be banned by name. Text that only starts
 * with numbers (`1.2.3-1`, `12:30-1`, `3.5mm2`, `10.0.0.1x`) is neither.
 */
export function addressSeries(text: string): boolean {
  const digits = digitsRead(text.trim());
  const host = digits.slice(digits.lastIndexOf('@') + 1);
  const parts = host.split(SERIES_BREAK).map(lettersRead);
  if (parts.length < 2 || parseAddressMask(parts[0]!) === undefined) return false;
  const piece = parts[0]!.includes(':') ? /^[0-9a-f]{1,4}$/i : /^[0-9]{1,3}$/;
  return parts
    .slice(1)
    .some((part) => part === '*' || piece.test(part) || parseAddressMask(part) !== undefined);
}

// A part may be a glob's bracket (`10.0.0.[1-9]`), which a reader takes for those addresses.
const IPV4_LIKE =
  /^(0x[0-9a-f]*|[0-9]+|\*|\[[0-9,-]*\])(\.(0x[0-9a-f]*|[0-9]*|\*|\[[0-9,-]*\])){1,3}(\/[0-9]*)?$/i;
const IPV6_LIKE = /^\[?[0-9a-f:.]*:[0-9a-f.]*:[0-9a-f:.]*\]?(%.*)?(\/[0-9]*)?$/i;
const BRACKETED = /^\[([0-9a-f:.]*:[0-9a-f:.]*|[0-9.]*\.[0-9.]*\.[0-9.]*)\](:[0-9]*)?(\/[0-9]*)?$/i;
/**
 * A network in the short form some tools take: `10/8` for 10.0.0.0/8, `0/0` for all (so
 * `24/7` and `50/50` are no nicknames: a BAN of them would read as a network).
 */
const SHORT_NETWORK =
  /^(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9]|0[0-7]{1,3}|0x[0-9a-f]{1,2})\/([0-2]?[0-9]|3[0-2])$/i;

/** Whether a text digitsRead has read is written as an address is (addressLike). */
function addressShaped(text: string): boolean {
  const digits = text.replaceAll('\u3002', '.');
  if (/^[0-9./:]+$/.test(digits) && /[.:]/.test(digits)) return true;
  if (!/[0-9]/.test(digits)) return false;
  // A zone (`%eth0`) after an address or network, IPv4 or IPv6, names no other one.
  const zone = digits.indexOf('%');
  if (zone > 0 && addressShaped(digits.slice(0, zone))) return true;
  return (
    IPV4_LIKE.test(digits) ||
    IPV6_LIKE.test(digits) ||
    BRACKETED.test(digits) ||
    SHORT_NETWORK.test(digits)
  );
}

const DECIMAL_DIGIT = /\p{Nd}/u;
/** Look-alike keys read as the character an address is written with. */
const READ_AS = new Map([
  [lookalikeKey('0'), '0'],
  [lookalikeKey('1'), '1'],
  [lookalikeKey('\u3002'), '.'],
]);

/** `text` in NFKC with every decimal digit of any script as its ASCII digit. */
function digitsRead(text: string): string {
  let read = '';
  for (const ch of text.normalize('NFKC')) {
    read += DECIMAL_DIGIT.test(ch) ? String(digitValue(ch)) : ch;
  }
  return read;
}

/** Letters that look like 0 and 1 (O, l, I), and an ideographic full stop, read as those. */
function lettersRead(text: string): string {
  let read = '';
  for (const ch of text) read += READ_AS.get(lookalikeKey(ch)) ?? ch;
  return read;
}

/**
 * A decimal digit's value: Unicode gives each script's digits as a run of ten from zero, so
 * it is the distance from the start of its run, in tens.
 */
function digitValue(ch: string): number {
  const cp = ch.codePointAt(0)!;
  let first = cp;
  while (cp - first < 100 && DECIMAL_DIGIT.test(String.fromCodePoint(first - 1))) first--;
  return (cp - first) % 10;
}

/**
 * NFC makes at most four code points one (a letter and three marks), each at
 * most two UTF-16 units: a name longer than this many units per permitted
 * character is too long in any spelling.
 */
export const MAX_UNITS_PER_CHARACTER = 8;

/** The nickname rules for any name people see and type (room names too), with its own length. */
export function checkName(raw: string, maxLength: number, noun: string): NicknameCheck {
  // Checked before normalising: NFC reorders a run of combining marks in time by the square
  // of its length, some 600 ms for a frame of them.
  if (raw.length > maxLength * MAX_UNITS_PER_CHARACTER) {
    return { ok: false, reason: `${noun} is longer than ${maxLength} characters` };
  }
  if (marksInRow(raw, MAX_LOOKUP_MARKS)) return tooManyMarks(noun);
  const nickname = raw.normalize('NFC');
  if (nickname.length === 0) return { ok: false, reason: `${noun} must not be empty` };
  const length = [...nickname].length;
  if (length > maxLength) {
    return { ok: false, reason: `${noun} is longer than ${maxLength} characters` };
  }
  if (FORBIDDEN.test(nickname)) {
    return { ok: false, reason: `${noun} must not contain spaces, control or format characters` };
  }
  if (INVISIBLE.test(nickname)) {
    return { ok: false, reason: `${noun} must not contain invisible or unassigned characters` };
  }
  if (
    LOOSE_MARK.test(nickname) ||
    OVERREACHING_MARK.test(nickname) ||
    HIDDEN_DOT.test(nickname) ||
    MARK_STACK.test(nickname)
  ) {
    return {
      ok: false,
      reason: `${noun} must not contain combining marks that hide or imitate other characters`,
    };
  }
  if (MARKS_IN_A_ROW.test(nickname)) return tooManyMarks(noun);
  // A few symbols fold to marks (U+309B to U+3099), so the folded name is checked too.
  if (lookalikeKeyWithin(nickname, MAX_LOOKUP_MARKS) === undefined) {
    return {
      ok: false,
      reason: `${noun} must not contain so many combining marks in a row, or symbols that stand for them`,
    };
  }
  return { ok: true, nickname };
}

function tooManyMarks(noun: string): NicknameCheck {
  return {
    ok: false,
    reason: `${noun} must not contain more than ${MAX_MARKS_IN_A_ROW} combining marks in a row`,
  };
}

/**
 * The key to look a name up by, or undefined for a name no one's can be: too
 * long (MAX_LOOKUP_LENGTH) or with too many marks in a row (MAX_LOOKUP_MARKS).
 * For names a client sends to be found.
 */
export function lookupKey(name: string): string | undefined {
  return name.length > MAX_LOOKUP_LENGTH ? undefined : lookalikeKeyWithin(name, MAX_LOOKUP_MARKS);
}

/**
 * Nonspacing marks on a Latin, Greek or Cyrillic letter, or on a digit or other character
 * common to all scripts: a dot below, a line under, a diacritic a terminal font may not draw
 * at all. Beside a name without them they read as that name, so a nickname's key leaves
 * them out (José is Jose, user2̣ is user2). Not on other letters: in Devanagari or kana a
 * mark makes another syllable (か, が), not a look-alike of one.
 */
const MARKS_ON_ALPHABETIC =
  /([\p{Script=Latin}\p{Script=Greek}\p{Script=Cyrillic}\p{Script=Common}])\p{Mn}+/gu;

/** The key under which a nickname is unique: look-alike names share it. */
export function nicknameKey(nickname: string): string {
  return lookalikeKey(nickname).replace(MARKS_ON_ALPHABETIC, '$1');
}

/**
 * nicknameKey for a name a client sends to be found (WHISPER, KICK), or undefined for one no
 * one's can be (lookupKey).
 */
export function nicknameLookupKey(name: string): string | undefined {
  return lookupKey(name)?.replace(MARKS_ON_ALPHABETIC, '$1');
}
