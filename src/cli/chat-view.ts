/**
 * How the terminal client renders things: pure functions from events to
 * lines, so they are tested without a terminal.
 */

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
  return paint(style, `\x1b[1;${nickColor(nickname)}m`, nickname);
}

export function timestamp(style: Style, date: Date): string {
  const hh = String(date.getHours()).padStart(2, '0');
  const mm = String(date.getMinutes()).padStart(2, '0');
  return paint(style, DIM, `${hh}:${mm}`);
}

export function ordinal(n: number): string {
  const mod100 = n % 100;
  if (mod100 >= 11 && mod100 <= 13) return `${n}th`;
  return `${n}${['th', 'st', 'nd', 'rd'][n % 10] ?? 'th'}`;
}

export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

export const view = {
  welcome: (s: Style, address: [string, number], nickname: string, count: number) =>
    `Connected to ${address[0]}:${address[1]} as ${nick(s, nickname)}. You are the ${ordinal(count)} user.\nType \\help for commands.`,
  chat: (s: Style, at: Date, from: string, msg: string) =>
    `${timestamp(s, at)} ${nick(s, from)}: ${msg}`,
  whisperIn: (s: Style, at: Date, from: string, msg: string) =>
    `${timestamp(s, at)} ${paint(s, WHISPER, '(whisper)')} ${nick(s, from)}: ${paint(s, WHISPER, msg)}`,
  whisperOut: (s: Style, at: Date, to: string, msg: string) =>
    `${timestamp(s, at)} ${paint(s, WHISPER, `(whisper to ${to})`)} ${paint(s, WHISPER, msg)}`,
  join: (s: Style, at: Date, who: string, count: number) =>
    `${timestamp(s, at)} ${paint(s, DIM, '*')} ${nick(s, who)} joined ${paint(s, DIM, `(${plural(count, 'user')})`)}`,
  leave: (s: Style, at: Date, who: string, count: number) =>
    `${timestamp(s, at)} ${paint(s, DIM, '*')} ${nick(s, who)} left ${paint(s, DIM, `(${plural(count, 'user')})`)}`,
  rename: (s: Style, at: Date, from: string, to: string) =>
    `${timestamp(s, at)} ${paint(s, DIM, '*')} ${nick(s, from)} is now known as ${nick(s, to)}`,
  info: (s: Style, text: string) => paint(s, DIM, text),
  error: (s: Style, text: string) => paint(s, ERROR, text),
  users: (s: Style, users: [string, string, number][]) =>
    [
      `${plural(users.length, 'user')} in the room:`,
      ...users.map(([n, ip, port]) => `  ${nick(s, n)} ${paint(s, DIM, `${ip}:${port}`)}`),
    ].join('\n'),
  prompt: (s: Style, nickname: string) => `${paint(s, BOLD, nickname)}> `,
};
