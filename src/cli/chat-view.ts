/**
 * How the terminal client renders things: pure functions from events to
 * lines, so they are tested without a terminal.
 *
 * Every string that came from the network goes through `visible` before the
 * client adds its own colors, so a peer's control characters are shown, not
 * obeyed (docs/security.md, "Terminal and log injection").
 */
import { asNumber, asString } from '../protocol/coerce.js';
import { mentions, visible } from '../protocol/text.js';

export interface Style {
  color: boolean;
}

const RESET = '\x1b[0m';
const DIM = '\x1b[2m';
const BOLD = '\x1b[1m';
// Readable on dark and light backgrounds; red is kept for errors.
const NICK_COLORS = [32, 33, 34, 35, 36, 92, 93, 94, 95, 96];
const ERROR = '\x1b[31m';
const WHISPER = '\x1b[35m';
// Bold and underlined: a line naming its reader stands out in any nickname's color.
const MENTION = '\x1b[1;4m';
// Dimmed as history is, and underlined: a missed message naming its reader is still found.
const HISTORY_MENTION = '\x1b[2;4m';

/**
 * Characters Node's readline takes for another width than terminals draw them (glibc's
 * wcwidth, which tmux and most terminals follow): regional indicators alone (two columns to
 * readline, one drawn), trigrams, Tai Xuan Jing signs, Hangul jamo medials and finals, a few
 * marks and format characters. Readline places the cursor by the prompt's width, and the
 * client clears the rows above it by that count before it prints a line: a prompt holding
 * them (a room name, or the nickname a server answers with) made each line shown erase the
 * one before. In the prompt they are shown as "?". (Listed by comparing the two for every
 * code point; names may hold only some of them.)
 */
const WIDTH_IN_DOUBT =
  /[\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2\u1160-\u11ff\u2630-\u2637\u268a-\u268f\u302a-\u302d\u3099\u309a\u3248-\u324f\ud7b0-\ud7c6\ud7cb-\ud7fb\u{110bd}\u{110cd}\u{1171e}\u{16fe4}\u{1d15e}-\u{1d164}\u{1d1bb}-\u{1d1c0}\u{1d300}-\u{1d356}\u{1d360}-\u{1d376}\u{1f1e6}-\u{1f1ff}]/gu;

/** Network values are typed but unchecked (a hostile server may send anything): show them as text. */
function text(value: unknown): string {
  return visible(asString(value));
}

function paint(style: Style, code: string, text: string): string {
  return style.color ? `${code}${text}${RESET}` : text;
}

/** The same nickname always gets the same color (FNV-1a hash of its code points). */
export function nickColor(nickname: string): number {
  let hash = 0x811c9dc5;
  for (const ch of nickname.toLowerCase()) {
    hash ^= ch.codePointAt(0)!;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return NICK_COLORS[hash % NICK_COLORS.length]!;
}

export function nick(style: Style, nickname: string): string {
  // A hostile server's member without a name still takes a place in the line.
  const shown = text(nickname) || '?';
  return paint(style, `\x1b[1;${nickColor(asString(nickname))}m`, shown);
}

function clock(date: Date): string {
  const hh = String(date.getHours()).padStart(2, '0');
  const mm = String(date.getMinutes()).padStart(2, '0');
  return `${hh}:${mm}`;
}

export function timestamp(style: Style, date: Date): string {
  return paint(style, DIM, clock(date));
}

/**
 * How far a recovered chat's time may be from now and the chat still be shown as chat, not
 * history. Read on this machine's clock against the server's: a skew past it shows them all
 * as history, which tells the truth that they were missed.
 */
const RECOVERED_IS_HISTORY_MS = 60_000;

/** A stored message's time: with its date unless it is from today (`now`). */
function storedAt(at: Date, now: Date): string {
  if (Number.isNaN(at.getTime())) return '--:--';
  if (at.toDateString() === now.toDateString()) return clock(at);
  const y = at.getFullYear();
  const mo = String(at.getMonth() + 1).padStart(2, '0');
  const d = String(at.getDate()).padStart(2, '0');
  return `${y}-${mo}-${d} ${clock(at)}`;
}

/** Why a room's gap could not be filled, in words (the server's reasons, see docs/protocol.md). */
const NOT_RECOVERED: Record<string, string> = {
  epoch: "the server's stored history was reset or restored",
  ahead: 'the server has fewer messages than this client saw',
  deleted: 'they were already deleted from the server',
  'too-many': 'too many were missed (\\history loads older ones)',
  off: 'the server keeps no history',
};

export function ordinal(n: number): string {
  const mod100 = n % 100;
  if (mod100 >= 11 && mod100 <= 13) return `${n}th`;
  return `${n}${['th', 'st', 'nd', 'rd'][n % 10] ?? 'th'}`;
}

export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** `[physics] ` before a line from a room other than the one being typed into; nothing otherwise. */
function tag(s: Style, room: string | undefined): string {
  return room === undefined ? '' : `${paint(s, BOLD, `[${text(room)}]`)} `;
}

export interface RoomLine {
  room: string;
  userCount: number;
  joined: boolean;
}

export const view = {
  welcome: (s: Style, address: [string, number], nickname: string, count: number) =>
    `Connected to ${text(address[0])}:${text(address[1])} as ${nick(s, nickname)}. You are the ${ordinal(asNumber(count))} user.\nType \\help for commands.`,
  /** The server's message of the day, each of its lines shown (a peer's text, made inert). */
  motd: (s: Style, motd: string) =>
    asString(motd)
      .split('\n')
      .map((line) => `${paint(s, DIM, '|')} ${text(line)}`)
      .join('\n'),
  /**
   * `action`: IRC's /me, shown as `* ann waves`. `me`: the reader's nickname; a chat of
   * someone else's that names it is marked (with color only). `now`, for a message said
   * earlier (missed, then recovered): its date is shown unless it is today's.
   */
  chat: (
    s: Style,
    at: Date,
    from: string,
    msg: string,
    room?: string,
    action = false,
    me?: string,
    now?: Date,
  ) => {
    const said =
      me !== undefined && from !== me && mentions(asString(msg), me)
        ? paint(s, MENTION, text(msg))
        : text(msg);
    const when = now === undefined ? timestamp(s, at) : paint(s, DIM, storedAt(at, now));
    return action
      ? `${when} ${tag(s, room)}* ${nick(s, from)} ${said}`
      : `${when} ${tag(s, room)}${nick(s, from)}: ${said}`;
  },
  /**
   * A chat said while this client was away, recovered on its return. After a short
   * reconnect it reads as the chat it was, with the time it was said; one said more than a
   * minute before (a start the next morning) is marked as history, or it would read as said now.
   */
  recovered: (
    s: Style,
    at: Date,
    from: string,
    msg: string,
    room: string | undefined,
    action: boolean,
    me: string,
    now = new Date(),
  ): string =>
    // A time that is no time, or far ahead of this clock, is not taken for now either.
    Math.abs(now.getTime() - at.getTime()) <= RECOVERED_IS_HISTORY_MS
      ? view.chat(s, at, from, msg, room, action, me, now)
      : view.history(s, at, from, msg, room, now, action, me),
  whisperIn: (s: Style, at: Date, from: string, msg: string) =>
    `${timestamp(s, at)} ${paint(s, WHISPER, '(whisper)')} ${nick(s, from)}: ${paint(s, WHISPER, text(msg))}`,
  whisperOut: (s: Style, at: Date, to: string, msg: string) =>
    `${timestamp(s, at)} ${paint(s, WHISPER, `(whisper to ${text(to)})`)} ${paint(s, WHISPER, text(msg))}`,
  // Joins, leaves and renames are marked with arrows, not an action's star: `* bob left (4
  // users)` could be bob's own action, and looked the server's line but for its dimness.
  join: (s: Style, at: Date, who: string, count: number, room?: string) =>
    `${timestamp(s, at)} ${tag(s, room)}${paint(s, DIM, '-->')} ${nick(s, who)} joined ${paint(s, DIM, `(${plural(asNumber(count), 'user')})`)}`,
  leave: (s: Style, at: Date, who: string, count: number, room?: string) =>
    `${timestamp(s, at)} ${tag(s, room)}${paint(s, DIM, '<--')} ${nick(s, who)} left ${paint(s, DIM, `(${plural(asNumber(count), 'user')})`)}`,
  rename: (s: Style, at: Date, from: string, to: string) =>
    `${timestamp(s, at)} ${paint(s, DIM, '--')} ${nick(s, from)} is now known as ${nick(s, to)}`,
  /** `typing`: what is typed goes to the room now (a \\join); else how to make it so. */
  joinedRoom: (s: Style, room: string, members: unknown, typing: boolean) => {
    const list: unknown[] = Array.isArray(members) ? members : [];
    const then = typing
      ? `You are typing into ${text(room)}.`
      : `Type \\room ${text(room)} to talk there.`;
    return `You joined ${text(room)} (${plural(list.length, 'user')}: ${list.map((m) => nick(s, asString(m))).join(', ')}). ${then}`;
  },
  rooms: (s: Style, rooms: RoomLine[], current: string) => {
    const list: unknown[] = Array.isArray(rooms) ? rooms : [];
    return [
      `${plural(list.length, 'room')}:`,
      ...list.map((entry) => {
        const r = (typeof entry === 'object' && entry !== null ? entry : {}) as Partial<RoomLine>;
        const marks = [plural(asNumber(r.userCount), 'user')];
        if (r.joined === true) marks.push('joined');
        if (r.room === current) marks.push('typing here');
        return `  ${paint(s, BOLD, text(r.room))} ${paint(s, DIM, `(${marks.join(', ')})`)}`;
      }),
    ].join('\n');
  },
  /**
   * A stored message shown on join or loaded by \\history: marked and dimmed,
   * with its own time (and date, unless today), so it is not taken for live chat. One
   * naming `me`, the reader, is underlined too: those said while the reader was away are
   * where a mention matters most.
   */
  history: (
    s: Style,
    at: Date,
    from: string,
    msg: string,
    room?: string,
    now = new Date(),
    action = false,
    me?: string,
  ) => {
    const head = `${storedAt(at, now)} ${room === undefined ? '' : `[${text(room)}] `}(history) ${action ? `* ${text(from)} ` : `${text(from)}: `}`;
    return me !== undefined && from !== me && mentions(asString(msg), me)
      ? `${paint(s, DIM, head)}${paint(s, HISTORY_MENTION, text(msg))}`
      : paint(s, DIM, `${head}${text(msg)}`);
  },
  /** A room whose missed messages could not all be replayed after a reconnect. */
  gap: (s: Style, room: string, reason: string | undefined) =>
    paint(
      s,
      ERROR,
      `Messages in ${text(room)} may be missing: ${reason === undefined ? 'the server did not say why' : (NOT_RECOVERED[reason] ?? text(reason))}.`,
    ),
  reconnecting: (s: Style, attempt: number, attempts: number, delayMs: number) =>
    paint(
      s,
      DIM,
      `${attempt === 1 ? 'Connection lost. ' : ''}Reconnecting in ${(delayMs / 1000).toFixed(1)} s (attempt ${attempt}${Number.isFinite(attempts) ? ` of ${attempts}` : ''})...`,
    ),
  reconnected: (s: Style, nickname: string, resumed: boolean, server?: string) =>
    paint(
      s,
      DIM,
      `Reconnected as ${text(nickname)}${server === undefined ? '' : ` to ${text(server)}`}${resumed ? '' : ' (a new session: your rooms were joined again)'}.`,
    ),
  /** At start, a saved token took back a session a lost connection had left on the server. */
  tookBack: (s: Style, nickname: string) =>
    paint(
      s,
      DIM,
      `Took back your session as ${text(nickname)}, which the server still held from before: your rooms are as you left them, and nobody saw you leave.`,
    ),
  /** `message` may quote the server or the user; it is shown, never obeyed. */
  info: (s: Style, message: string) => paint(s, DIM, text(message)),
  error: (s: Style, message: string) => paint(s, ERROR, text(message)),
  /** `room`: named when asked for by name (`\\users physics`), not the one typed into. */
  users: (s: Style, users: [string, string, number][], room?: string) => {
    // Shaped as the protocol says only if the server is honest; anything else still prints.
    const list: unknown[] = Array.isArray(users) ? users : [];
    return [
      `${plural(list.length, 'user')} in ${room === undefined ? 'the room' : text(room)}:`,
      ...list.map((entry) => {
        const [n, ip, port]: unknown[] = Array.isArray(entry) ? entry : [entry];
        // A server hiding addresses sends ["ann", "hidden", 0]: no port to show.
        const where = port === 0 ? text(ip) : `${text(ip)}:${text(port)}`;
        return `  ${nick(s, asString(n))} ${paint(s, DIM, where)}`;
      }),
    ].join('\n');
  },
  /**
   * `ann> ` in the lobby, `ann@physics> ` while typing into another room;
   * `waiting`: lines queued to stay under the server's flood limit, shown while there are any;
   * `offline`: the connection is lost and being restored (`ann (reconnecting)> `).
   */
  prompt: (s: Style, nickname: string, room?: string, waiting = 0, offline = false) => {
    const name = asString(nickname) + (room === undefined ? '' : `@${asString(room)}`);
    const who = paint(s, BOLD, text(name.replace(WIDTH_IN_DOUBT, '?')));
    const state = [offline ? 'reconnecting' : '', waiting > 0 ? `${waiting} queued` : '']
      .filter((part) => part !== '')
      .join(', ');
    return state === '' ? `${who}> ` : `${who} ${paint(s, DIM, `(${state})`)}> `;
  },
  queued: (s: Style, waiting: number) =>
    paint(s, DIM, `(${plural(waiting, 'line')} queued, sent at the server's pace)`),
};
