/**
 * Making untrusted text inert for terminals and log files. Anything a peer
 * sent may hold control characters; printed raw, they let the peer move the
 * cursor, retitle the window, make the terminal type into the victim's input
 * (device status reports), or forge whole lines. These functions show such
 * characters instead of passing or silently dropping them:
 *
 * - C0 controls and DEL in caret notation: ESC is `^[`, LF `^J`, CR `^M`,
 *   TAB `^I`, BEL `^G`, BS `^H`, NUL `^@`, DEL `^?`;
 * - C1 controls (U+0080-U+009F), the bidirectional controls (U+061C,
 *   U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and the line and
 *   paragraph separators (U+2028, U+2029) as `<U+XXXX>`.
 *
 * With ESC and the single-character CSI (U+009B) shown, no escape sequence
 * survives: what follows them is plain text.
 */

// Written as strings: the patterns name control characters on purpose.
/**
 * DEL, C1, the bidi controls and the separators: what a terminal may obey besides C0, and
 * what JSON.stringify leaves raw (inertJson; the codec's jsonString looks for them too).
 */
export const TERMINAL_UNSAFE_RANGES =
  '\\u007f-\\u009f\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069';
const UNSAFE_CLASS = `[\\u0000-\\u001f${TERMINAL_UNSAFE_RANGES}]`;
const UNSAFE = new RegExp(UNSAFE_CLASS);
const UNSAFE_ALL = new RegExp(UNSAFE_CLASS, 'g');

/** True when `text` holds a character that `visible` would rewrite. */
export function hasUnsafe(text: string): boolean {
  return UNSAFE.test(text);
}

function show(ch: string): string {
  const code = ch.charCodeAt(0);
  if (code < 0x20) return `^${String.fromCharCode(code + 0x40)}`;
  if (code === 0x7f) return '^?';
  return `<U+${code.toString(16).toUpperCase().padStart(4, '0')}>`;
}

/** `text` with every control, bidi and line-separator character made visible (see above). */
export function visible(text: string): string {
  return UNSAFE.test(text) ? text.replace(UNSAFE_ALL, show) : text;
}

const JSON_UNSAFE_CLASS = `[${TERMINAL_UNSAFE_RANGES}]`;
const JSON_UNSAFE = new RegExp(JSON_UNSAFE_CLASS);
const JSON_UNSAFE_ALL = new RegExp(JSON_UNSAFE_CLASS, 'g');

/**
 * JSON text with the characters a terminal may obey that JSON.stringify leaves raw written
 * as \uXXXX escapes: the same value to any parser, inert bytes to whoever watches the
 * stream or the log raw (nc, websocat, tail). They can only be inside strings: JSON's own
 * syntax is ASCII.
 */
export function inertJson(json: string): string {
  return JSON_UNSAFE.test(json)
    ? json.replace(JSON_UNSAFE_ALL, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`)
    : json;
}

/** Default length of a client string in a log line. */
export const CLIP_LENGTH = 100;

/**
 * A client string for a log line: made visible, then cut after `max`
 * characters of the visible form with a "...(+N)" marker, N being the
 * characters of the original left out. Only the kept prefix is looked at,
 * so a 64 KB frame costs no more than a short one.
 */
export function clip(text: string, max = CLIP_LENGTH): string {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const code = text.codePointAt(i)!;
    const ch = String.fromCodePoint(code);
    const shown = visible(ch);
    if (out.length + shown.length > max) break;
    out += shown;
    i += ch.length;
  }
  return i < text.length ? `${out}...(+${text.length - i})` : out;
}

/**
 * Whether `text` is at most `max` characters (code points: an emoji outside the Basic
 * Multilingual Plane is one, though a JavaScript string holds it as two units). Costs
 * nothing more than `length` for text within `max` units, where nearly all of it is.
 */
export function atMostChars(text: string, max: number): boolean {
  if (text.length <= max) return true;
  if (text.length > 2 * max) return false;
  let chars = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    // A high surrogate followed by a low one is one character.
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    if (++chars > max) return false;
  }
  return true;
}

// With the u flag a pair is one code point: \p{Cs} matches only a lone surrogate.
const LONE_SURROGATE = /\p{Cs}/u;
const LONE_SURROGATES = /\p{Cs}/gu;

/** Whether `text` holds a UTF-16 surrogate not part of a pair (JSON can escape one: "\ud800"). */
export function hasLoneSurrogate(text: string): boolean {
  return LONE_SURROGATE.test(text);
}

/** `text` with each lone surrogate replaced by U+FFFD, as every history store keeps it. */
export function wellFormed(text: string): string {
  return hasLoneSurrogate(text) ? text.replace(LONE_SURROGATES, '\uFFFD') : text;
}

/** Bytes of `text` in UTF-8 inside a JSON string: quotes and backslashes escaped, no controls. */
export function jsonUtf8Bytes(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 || c === 0x5c) bytes += 2;
    else if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      // A surrogate pair is one 4-byte character.
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

/**
 * Characters that show nothing of their own: spaces, controls, default-ignorable characters
 * (U+200B, bidi controls, U+3164's Hangul filler), the blank braille pattern, and marks that
 * take no space with no letter to sit on. Not every format character: U+0600-0605 and U+06DD
 * show a sign.
 */
const SHOWS_NOTHING = /^[\s\p{Cc}\p{Z}\p{Mn}\p{Default_Ignorable_Code_Point}\u2800]*$/u;

/** Whether `text` shows nothing when printed: blank, or only invisible characters. */
export function blank(text: string): boolean {
  return SHOWS_NOTHING.test(text);
}

/** A server's reason, worded to follow a colon ("server shutting down"), as a line of its own. */
export function sentence(text: string): string {
  return `${text.charAt(0).toUpperCase()}${text.slice(1)}.`;
}

/**
 * An action (IRC's /me) as a client without the "actions" capability is sent it: between
 * asterisks, which reads as one after the sender's name (`ann: *waves*`).
 */
export function actionShownAsChat(msg: string): string {
  return `*${msg}*`;
}

/** A character that continues a word: a nickname inside one is not named. */
const WORD = '[\\p{L}\\p{N}\\p{M}_]';
let mentionOf: { nickname: string; pattern: RegExp } | undefined;

/**
 * Whether `msg` names `nickname` as a word, in any letter case ("Ann, look", "@ann"): a
 * line to its reader, which the clients mark as IRC clients highlight their user's nick.
 * Not inside another word or name ("annual", "ann_2").
 */
export function mentions(msg: string, nickname: string): boolean {
  if (nickname === '') return false;
  if (mentionOf?.nickname !== nickname) {
    const literal = nickname.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
    mentionOf = {
      nickname,
      pattern: new RegExp(`(?<!${WORD})${literal}(?!${WORD})`, 'iu'),
    };
  }
  return mentionOf.pattern.test(msg);
}
