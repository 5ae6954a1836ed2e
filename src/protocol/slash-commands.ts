import { asNumber, asString } from './coerce.js';
import type { BanEntry } from './messages.js';
import { MAX_BAN_SECONDS } from './request-codec.js';
import { blank } from './text.js';

/** How both clients' `\\help` tells of commands written as in IRC. */
export const SLASH_HELP = `Commands may also start with / as in IRC (also /msg, /nick, /list, /names);
"//" before a command's name sends the line as chat with one "/" less ("//join" sends
"/join"), other lines as typed ("//TODO"); an unknown /word is not sent.`;

/** The operators' commands, as both clients' `\\help` lists them. */
export const OPERATOR_HELP = `Operators:
  \\oper <name> <password>              become an operator
  \\kick <nickname> [reason]            disconnect a member
  \\ban <nickname|address|cidr> [10m|2h|7d|2h30m] [reason]
                                       ban (until unbanned without a duration)
  \\unban <mask>                        lift a ban
  \\bans                                list the bans`;

/**
 * The course client's command syntax, shared by the terminal and web clients:
 * a line starting with "\\" is a command, anything else is chat.
 */
export const HELP = `Commands:
  \\users [room]           who is in a room (default: the one typed into)
  \\wh <nickname> <text>   whisper to one user
  \\me <text>              say what you do, shown as "* ann waves" (also /me)
  \\rename <nickname>      change your nickname
  \\rtt                    round-trip time to the server
  \\version                server and client versions
  \\join <room>            join a room and type into it (made if it does not exist)
  \\leave [room]           leave a room (also \\part; the lobby is left with \\exit)
  \\rooms                  every room, with its count and whether you are in it
  \\room <room>            type into that room from now on (\\room lobby to go back)
  \\history [n]            the n (default 20, at most 100) messages before the oldest shown
  \\help                   this list
  \\exit                   leave (Ctrl+C or Ctrl+D also work)
${OPERATOR_HELP}
${SLASH_HELP}
Anything else is sent to the room you are typing into.`;

/** What the clients say of \\me to a server without "actions" (the course server). */
export const NO_ACTIONS = 'This server does not take \\me.';
/** What the clients say of a \\exit or /quit with a message: it is not sent. */
export const NO_QUIT_MESSAGE = 'Quit messages are not sent: the others see only that you left.';
/** What the clients say of a \\leave or /part with a reason: it is not sent. */
export const NO_PART_REASON =
  'Reasons for leaving are not sent: the others see only that you left.';

/**
 * Why a chat or whisper of `text` is not sent, when it is longer than the server's `max`
 * characters (its "03" limits): the clients say so and keep the line, where the server
 * would refuse it after the client showed it as said.
 */
export function tooLongToSend(text: string, max: number): string | undefined {
  const length = [...text].length;
  if (length <= max) return undefined;
  return `Not sent: the message is ${length} characters long; the most is ${max}.`;
}

/**
 * What the clients say of `\\leave <room> <reason>` (IRC's `/part #room reason`) when no
 * room of that name is joined (`isJoined`), with a reason: "/part see you" meant a reason
 * for the room typed into, and "/part phsyics bye" a room misspelt; neither is guessed.
 */
export function partRefused(
  command: { readonly room?: string; readonly reason?: string },
  isJoined: (room: string) => boolean,
): string | undefined {
  if (command.room === undefined || command.reason === undefined || isJoined(command.room))
    return undefined;
  return `You are not in ${command.room}. To leave the room you are typing into, type \\leave alone; reasons are not sent.`;
}

/** Messages \\history loads when not told how many. */
export const HISTORY_PAGE = 20;

export type Command =
  | { kind: 'chat'; text: string }
  /** IRC's /me: chat that says what the sender does. */
  | { kind: 'action'; text: string }
  /** No room: the one being typed into. */
  | { kind: 'users'; room?: string }
  | { kind: 'whisper'; to: string; text: string }
  | { kind: 'rename'; nickname: string }
  | { kind: 'rtt' }
  | { kind: 'version' }
  | { kind: 'help' }
  | { kind: 'join'; room: string }
  /** No room: the one being typed into. */
  /** A reason, as IRC's PART takes one: confab sends none, and the clients say so. */
  | { kind: 'part'; room: string | undefined; reason?: string }
  | { kind: 'rooms' }
  | { kind: 'room'; room: string }
  | { kind: 'history'; count: number }
  /** A message, as IRC's QUIT takes one: confab sends none, and the clients say so. */
  | { kind: 'exit'; message?: string }
  | { kind: 'oper'; name: string; password: string }
  | { kind: 'kick'; nickname: string; reason: string }
  | { kind: 'ban'; mask: string; seconds: number | undefined; reason: string }
  | { kind: 'unban'; mask: string }
  | { kind: 'bans' }
  | { kind: 'empty' }
  | { kind: 'invalid'; message: string };

/** Space after a command word, zero-width ones included (they come along with copied text). */
const SPACE = '[\\s\\u200B-\\u200D\\u2060\\uFEFF]';

/**
 * A line that starts with "/" and a word of letters of any script (or "?"): a command as IRC
 * clients write it, known or not ("/оper" with a Cyrillic "о" is not sent as chat).
 */
const SLASHED = new RegExp(`^/([\\p{L}\\p{M}?]+)(?:${SPACE}|$)`, 'u');
/**
 * The same after "\\", the course's prefix: a line such as "\\o/" or "\\_(ツ)_/" starts with
 * no command word, and is chat.
 */
const BACKSLASHED = new RegExp(`^\\\\[\\p{L}\\p{M}?]+(?:${SPACE}|$)`, 'u');

/** Characters that pass for "/" at the start of a line (full-width, division, fraction). */
const SLASH_LOOKALIKES = /^[\uFF0F\u2215\u2044]/;

/** The command word, and what follows the space after it. */
const WORDS = new RegExp(`^((?:(?!${SPACE})[\\s\\S])*)${SPACE}?([\\s\\S]*)$`, 'u');

/** The command word of a line after its prefix, and the rest. */
function words(line: string): [string, string] {
  const [, word = '', args = ''] = WORDS.exec(line.slice(1)) ?? [];
  return [word, args];
}

/** A word parseWords takes for a command (with or without the arguments it needs). */
function known(word: string): boolean {
  return parseWords(word, '') !== undefined;
}

/** What an unknown command's line is told: how to send it as chat instead. */
function unknown(prefix: string, word: string): Command {
  return {
    kind: 'invalid',
    message: `Unknown command ${prefix}${word}. Type ${prefix}help for the list, or start the line with a space to send it as chat.`,
  };
}

/**
 * Parses one line of input. A command starts with "\\" and a word, as in the course's client,
 * or with "/" and a word, as in IRC clients; "//" before a command's name sends the line with one
 * "/" less, as chat. Anything else is chat, unchanged ("/usr/bin", "/5 stars", "//TODO",
 * " /lol"), but a command's name after a look-alike of "/" ("／oper …"), which is refused.
 */
export function parseCommand(line: string): Command {
  if (line.trim() === '') return { kind: 'empty' };
  if (line.startsWith('//')) {
    const escaped = SLASHED.exec(line.slice(1));
    const text = escaped !== null && known(escaped[1]!) ? line.slice(1) : line;
    return { kind: 'chat', text };
  }
  if (SLASH_LOOKALIKES.test(line) && known(words(line)[0])) {
    return {
      kind: 'invalid',
      message: `This line starts with “${line[0]}”, not “/”: not sent, in case it is a command (its password, say). Start it with a space to send it as chat.`,
    };
  }
  const slashed = SLASHED.test(line);
  if (!slashed && !BACKSLASHED.test(line)) return { kind: 'chat', text: line };
  const [word, args] = words(line);
  const command = parseWords(word, args);
  if (command === undefined) return unknown(slashed ? '/' : '\\', word);
  if (command.kind !== 'invalid' || !slashed) return command;
  // Its usage as it was typed: "/join <room>", not "\\join <room>".
  return { kind: 'invalid', message: command.message.replace(/\\(?=[a-z])/g, '/') };
}

/** A room as IRC users name channels ("#physics"): the "#" is how clients show every room. */
function roomArgument(args: string): string {
  const room = args.trim();
  return room.length > 1 && room.startsWith('#') ? room.slice(1) : room;
}

/** The first word of `args` and the rest, each trimmed. */
function restAfterWord(args: string): [string, string] {
  const rest = args.trim();
  const space = rest.search(/\s/);
  return space < 0 ? [rest, ''] : [rest.slice(0, space), rest.slice(space + 1).trim()];
}

/** The command `word` names, with `args`; undefined when it names none. */
function parseWords(word: string, args: string): Command | undefined {
  switch (word.toLowerCase()) {
    case 'users':
    case 'names': {
      const room = roomArgument(args);
      if (/\s/.test(room))
        return { kind: 'invalid', message: `Usage: \\${word.toLowerCase()} [room]` };
      return room === '' ? { kind: 'users' } : { kind: 'users', room };
    }
    case 'me': {
      if (blank(args)) return { kind: 'invalid', message: 'Usage: \\me <what you do>' };
      return { kind: 'action', text: args };
    }
    case 'wh':
    case 'whisper':
    case 'msg': {
      const space = args.indexOf(' ');
      const to = space < 0 ? args : args.slice(0, space);
      const text = space < 0 ? '' : args.slice(space + 1);
      if (to === '' || text.trim() === '')
        return {
          kind: 'invalid',
          message: `Usage: \\${word.toLowerCase()} <nickname> <message>`,
        };
      return { kind: 'whisper', to, text };
    }
    case 'rename':
    case 'nick': {
      const nickname = args.trim();
      if (nickname === '' || /\s/.test(nickname))
        return { kind: 'invalid', message: `Usage: \\${word.toLowerCase()} <nickname>` };
      return { kind: 'rename', nickname };
    }
    case 'rtt':
      return { kind: 'rtt' };
    case 'version':
      return { kind: 'version' };
    case 'join': {
      const room = roomArgument(args);
      if (room === '') return { kind: 'invalid', message: 'Usage: \\join <room>' };
      if (/\s/.test(room))
        return {
          kind: 'invalid',
          message: 'Room names cannot contain spaces. Usage: \\join <room>',
        };
      // IRC's list of channels ("#a,#b"): one room at a time here.
      if (room.includes(',#'))
        return { kind: 'invalid', message: 'Join one room at a time. Usage: \\join <room>' };
      return { kind: 'join', room };
    }
    case 'leave':
    case 'part': {
      const [first = '', reason] = restAfterWord(args);
      const room = roomArgument(first);
      const part: Command = { kind: 'part', room: room === '' ? undefined : room };
      return reason === '' ? part : { ...part, reason };
    }
    case 'rooms':
    case 'list':
      return { kind: 'rooms' };
    case 'room': {
      const room = roomArgument(args);
      if (room === '' || /\s/.test(room))
        return { kind: 'invalid', message: 'Usage: \\room <room>' };
      return { kind: 'room', room };
    }
    case 'history': {
      const arg = args.trim();
      if (arg === '') return { kind: 'history', count: HISTORY_PAGE };
      const count = /^\d{1,3}$/.test(arg) ? Number(arg) : 0;
      if (count < 1 || count > 100)
        return { kind: 'invalid', message: 'Usage: \\history [n], n from 1 to 100' };
      return { kind: 'history', count };
    }
    case 'help':
    case '?':
      return { kind: 'help' };
    case 'exit':
    case 'quit': {
      const message = args.trim();
      return message === '' ? { kind: 'exit' } : { kind: 'exit', message };
    }
    case 'oper': {
      // The password is the rest of the line, as confab hash-password reads a whole line.
      const rest = args.replace(/^ +/, '');
      const space = rest.indexOf(' ');
      const name = space < 0 ? rest : rest.slice(0, space);
      const password = space < 0 ? '' : rest.slice(space + 1).replace(/^ +/, '');
      if (name === '' || password === '')
        return { kind: 'invalid', message: 'Usage: \\oper <name> <password>' };
      return { kind: 'oper', name, password };
    }
    case 'kick': {
      const [nickname = '', ...reason] = args.split(' ').filter((w) => w !== '');
      if (nickname === '') return { kind: 'invalid', message: 'Usage: \\kick <nickname> [reason]' };
      return { kind: 'kick', nickname, reason: reason.join(' ') };
    }
    case 'ban': {
      const [mask = '', ...rest] = args.split(' ').filter((w) => w !== '');
      if (mask === '')
        return {
          kind: 'invalid',
          message: 'Usage: \\ban <nickname|address|cidr> [duration like 10m, 2h, 7d] [reason]',
        };
      // A duration may be written in words of its own ("2h 30m").
      let seconds: number | undefined;
      for (let next = rest[0]; next !== undefined; next = rest[0]) {
        const more = parseDuration(next);
        if (more === undefined || (seconds ?? 0) + more > MAX_BAN_SECONDS) break;
        seconds = (seconds ?? 0) + more;
        rest.shift();
      }
      const word = rest[0];
      // A duration mistyped ("0m", "90min", "10y") had gone out as the reason's first word,
      // and the ban for good.
      if (seconds === undefined && word !== undefined && /^\p{Nd}/u.test(word)) {
        return {
          kind: 'invalid',
          message: `Not banned: "${word}" is no duration. Write one like 30s, 10m, 2h, 7d, 1w or 2h30m (at most ${MAX_BAN_SECONDS / 86400} days); a reason may not start with a digit.`,
        };
      }
      return { kind: 'ban', mask, seconds, reason: rest.join(' ') };
    }
    case 'unban': {
      const mask = args.trim();
      if (mask === '' || /\s/.test(mask))
        return { kind: 'invalid', message: 'Usage: \\unban <mask>' };
      return { kind: 'unban', mask };
    }
    case 'bans':
      return { kind: 'bans' };
    default:
      return undefined;
  }
}

const UNITS: Record<string, [number, string]> = {
  s: [1, 'second'],
  m: [60, 'minute'],
  h: [3600, 'hour'],
  d: [86400, 'day'],
  w: [604800, 'week'],
};

/**
 * "10m", "2h", "7d", "1w", "30s", "2h30m" as seconds; undefined if the word is not a
 * duration a ban may have (none, or longer than MAX_BAN_SECONDS). Units in either case but
 * for minutes: "10M" may have meant months.
 */
export function parseDuration(word: string): number | undefined {
  if (!/^(\d{1,9}[smhdwSHDW])+$/.test(word)) return undefined;
  let seconds = 0;
  for (const [, n, unit] of word.matchAll(/(\d+)([smhdwSHDW])/g)) {
    seconds += Number(n) * UNITS[unit!.toLowerCase()]![0];
  }
  return seconds > 0 && seconds <= MAX_BAN_SECONDS ? seconds : undefined;
}

/** A ban's length in words: "1 hour", "90 minutes", "2 days". */
export function formatDuration(seconds: number): string {
  for (const unit of ['w', 'd', 'h', 'm'] as const) {
    const [size, name] = UNITS[unit]!;
    if (seconds >= size && seconds % size === 0) {
      const n = seconds / size;
      return `${n} ${name}${n === 1 ? '' : 's'}`;
    }
  }
  return `${seconds} second${seconds === 1 ? '' : 's'}`;
}

/**
 * How long a ban has left, in words, to the minute: "1 hour 59 minutes", "3 days 4 hours",
 * "45 seconds". Its two largest units, as a person would say it, where formatDuration
 * gives a ban's exact length ("7199 seconds").
 */
export function timeLeft(ms: number): string {
  // What a server sends is unchecked: an expiry that is no number has no time left to say.
  if (!Number.isFinite(ms)) return 'an unknown time';
  const seconds = Math.max(1, Math.round(ms / 1000));
  if (seconds < 60) return formatCount(seconds, 'second');
  const minutes = Math.round(seconds / 60);
  const parts: [number, string][] = [
    [Math.floor(minutes / 1440), 'day'],
    [Math.floor(minutes / 60) % 24, 'hour'],
    [minutes % 60, 'minute'],
  ];
  const first = parts.findIndex(([n]) => n > 0);
  return parts
    .slice(first, first + 2)
    .filter(([n]) => n > 0)
    .map(([n, name]) => formatCount(n, name))
    .join(' ');
}

function formatCount(n: number, name: string): string {
  return `${n} ${name}${n === 1 ? '' : 's'}`;
}

/**
 * A "98" ban list as the protocol shapes it, whatever a server sent: no list is an empty
 * one, an entry that is no object is dropped, and each field is made text or a number. The
 * clients read `bans.length` and each entry's fields, which threw for a hostile server's
 * `{"cmd":"98"}` or `[null]` and ended `confab chat` with a stack trace.
 */
export function banList(value: unknown): BanEntry[] {
  if (!Array.isArray(value)) return [];
  return value.flatMap((entry: unknown): BanEntry[] => {
    if (typeof entry !== 'object' || entry === null) return [];
    const e = entry as Record<string, unknown>;
    return [
      {
        mask: asString(e.mask),
        by: asString(e.by),
        reason: e.reason === undefined || e.reason === null ? '' : asString(e.reason),
        expires: e.expires === null ? null : asNumber(e.expires),
      },
    ];
  });
}

/** One ban of a "102" list in words, as both clients show it: "203.0.113.0/24 by teacher for 2 hours (spam)". */
export function describeBan(ban: BanEntry, now = Date.now()): string {
  const until = ban.expires === null ? 'until unbanned' : `for ${timeLeft(ban.expires - now)} more`;
  return `${ban.mask} by ${ban.by} ${until}${ban.reason ? ` (${ban.reason})` : ''}`;
}

/**
 * What the answer to an UNBAN says of it, as both clients show it before the list of bans
 * left: the list alone did not say whether it lifted one (a mask typed wrong, or an address
 * inside a banned block, lifts nothing). `removed`: the answer's field, which a server
 * before it does not send (nothing is said then).
 */
export function describeUnban(mask: string, removed: unknown): string | undefined {
  if (typeof removed !== 'boolean') return undefined;
  const asked = mask.trim();
  return removed
    ? `Unbanned ${asked}.`
    : `No ban on ${asked} to lift: a ban is lifted by its own mask (\\bans lists them).`;
}

/** A "99" notice in words, as both clients show it: "bob was banned by teacher for 1 hour (spam)". */
export function describeModeration(notice: {
  action: string;
  nickname: string;
  by: string;
  reason?: string;
  seconds?: number;
}): string {
  const what = notice.action === 'ban' ? 'banned' : 'kicked';
  const span =
    notice.action === 'ban' && typeof notice.seconds === 'number'
      ? ` for ${formatDuration(notice.seconds)}`
      : '';
  const why = notice.reason ? ` (${notice.reason})` : '';
  return `${notice.nickname} was ${what} by ${notice.by}${span}${why}`;
}
