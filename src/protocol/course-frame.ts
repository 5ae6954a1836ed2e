import { Cmd } from './codes.js';
import { serializeLine } from './message-codec.js';
import type { ServerMessage } from './messages.js';
import { hasUnsafe, visible } from './text.js';

/**
 * The course client reads every reply with one `recv(1024)` and hands exactly
 * what arrived to `json.loads`. Two messages in one read kill its receive
 * thread ("Extra data"), which is what happens when another member pastes a
 * few lines. So every message to a client that negotiated nothing is padded
 * with spaces to exactly this many bytes: however many are queued, each
 * `recv(1024)` then returns one whole message, and JSON allows the trailing
 * whitespace. The last byte is "\n", so line-based tools still see lines.
 */
export const COURSE_FRAME_BYTES = 1024;

const SPACE = 0x20;
const LF = 0x0a;
const utf8 = new TextEncoder();

/**
 * Writes one serialised line (ending in "\n", known to fit) at `at` and pads
 * it to COURSE_FRAME_BYTES; returns false if it does not fit.
 */
function putPadded(line: string, into: Uint8Array, at: number): boolean {
  const frame = into.subarray(at, at + COURSE_FRAME_BYTES);
  const { read, written } = utf8.encodeInto(line, frame);
  if (read !== line.length) return false;
  // The line's own "\n" becomes padding; the frame's last byte ends it.
  frame.fill(SPACE, written - 1, COURSE_FRAME_BYTES - 1);
  frame[COURSE_FRAME_BYTES - 1] = LF;
  return true;
}

/** UTF-8 bytes of one code point (a string of one or two units) once JSON.stringify has escaped it. */
function escapedBytes(ch: string): number {
  const c = ch.codePointAt(0)!;
  if (c < 0x20) {
    // \b \t \n \f \r have two-character escapes; the other controls are \u00XX.
    return c === 0x08 || c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d ? 2 : 6;
  }
  if (c === 0x22 || c === 0x5c) return 2;
  if (c < 0x80) return 1;
  if (c < 0x800) return 2;
  if (ch.length === 1 && c >= 0xd800 && c <= 0xdfff) return 6; // a lone surrogate is escaped
  return c < 0x10000 ? 3 : 4;
}

type ChatMessage = Extract<ServerMessage, { cmd: typeof Cmd.CHAT_RESPONSE }>;

const graphemes = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

/**
 * Cuts a chat text into pieces whose "70" frames each fit COURSE_FRAME_BYTES. A cut is moved
 * back to the start of the grapheme it falls in (a course client prints each piece on a line
 * of its own, and half a flag, an emoji sequence or a letter without its accent reads as
 * something else), unless that grapheme began the piece (marks stacked by the hundred): then
 * it falls between code points. Never inside a surrogate pair. Graphemes are looked up at the
 * cuts only: segmenting the whole text cost a long chat of escapes half a second.
 */
function splitText(message: ChatMessage): string[] {
  const budget = COURSE_FRAME_BYTES - utf8.encode(serializeLine({ ...message, msg: '' })).length;
  const parts: string[] = [];
  const text = message.msg;
  let segments: Intl.Segments | undefined;
  let start = 0;
  let used = 0;
  let i = 0;
  for (const ch of text) {
    const cost = escapedBytes(ch);
    if (used + cost > budget && i > start) {
      segments ??= graphemes.segment(text);
      const begins = segments.containing(i)?.index ?? i;
      let cut = begins > start ? begins : i;
      // What moves to the next piece, from the grapheme's start to here; if that and this
      // code point do not fit one piece, the grapheme is cut here after all.
      let carried = 0;
      for (const moved of text.slice(cut, i)) carried += escapedBytes(moved);
      if (carried + cost > budget) {
        cut = i;
        carried = 0;
      }
      parts.push(text.slice(start, cut));
      start = cut;
      used = carried;
    }
    used += cost;
    i += ch.length;
  }
  parts.push(text.slice(start));
  return parts;
}

/**
 * The bytes a course client gets for a message: one padded frame, or, for a
 * chat too long for one, several "70"s from the same sender, each padded.
 * Anything else too long to pad (a USERS list of ten long non-ASCII names)
 * goes out as it is, as the course server would have sent it.
 */
export function encodeCourseFrames(message: ServerMessage): Uint8Array {
  // A course client prints a chat's text as it gets it: control and bidi characters in a
  // member's text would drive its terminal (retitle it, forge lines, type into its input).
  // It is shown them as `confab chat` shows them. Names cannot hold them (nickname rules).
  if (message.cmd === Cmd.CHAT_RESPONSE && hasUnsafe(message.msg)) {
    message = { ...message, msg: visible(message.msg) };
  }
  const line = serializeLine(message);
  const one = new Uint8Array(COURSE_FRAME_BYTES);
  if (putPadded(line, one, 0)) return one;
  if (message.cmd !== Cmd.CHAT_RESPONSE) return utf8.encode(line);
  const parts = splitText(message);
  const out = new Uint8Array(parts.length * COURSE_FRAME_BYTES);
  for (const [n, msg] of parts.entries()) {
    putPadded(serializeLine({ ...message, msg }), out, n * COURSE_FRAME_BYTES);
  }
  return out;
}
