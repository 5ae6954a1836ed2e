// The composer: a typed or pasted line goes out unless it cannot now (said why, and kept), and
// its keys scroll the log. It only listens, so main.ts imports it for that.
import { type Command, parseCommand, tooLongToSend } from '../../src/protocol/slash-commands.js';
import { submit } from './commands.js';
import { composer, input, statusBox } from './dom.js';
import { error, loadOlder, selected } from './rooms.js';
import { connection } from './state.js';

/** The course server's, and confab's default --max-message, for a server that told none. */
const DEFAULT_MAX_MESSAGE = 4096;

/**
 * A message (a line's parsed command) longer than the server takes is refused here rather than
 * cut or refused by the server (the composer keeps it to be shortened): whether that is so,
 * said if it is.
 */
function tooLong(command: Command): boolean {
  const msg =
    command.kind === 'chat' || command.kind === 'action' || command.kind === 'whisper'
      ? command.text
      : '';
  const refused = tooLongToSend(msg, connection.maxMessage ?? DEFAULT_MAX_MESSAGE);
  if (refused === undefined) return false;
  error(refused);
  return true;
}

/**
 * A line that cannot go out now, said why: too long, a command refused here, or one that
 * needs the server while it is away (chats wait for it; leaving does not need it). The
 * composer keeps it, to be fixed or sent again.
 */
function heldBack(text: string): boolean {
  const command = parseCommand(text);
  if (tooLong(command)) return true;
  if (command.kind === 'invalid') {
    error(command.message);
    return true;
  }
  const local =
    command.kind === 'chat' ||
    command.kind === 'action' ||
    command.kind === 'empty' ||
    command.kind === 'exit';
  if (statusBox.dataset.status !== 'online' && !local) {
    error('Not connected right now; try again once reconnected.');
    return true;
  }
  return false;
}

composer.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = input.value;
  if (heldBack(text)) return;
  input.value = '';
  void submit(text);
});

/**
 * PageUp and PageDown in the composer scroll the log, and Ctrl+Home and Ctrl+End go to its
 * ends (a one-line input loses nothing: Home and End still move the caret), so a reader on
 * the keyboard reads back without leaving what they are typing.
 */
function scrollFromComposer(event: KeyboardEvent): void {
  const list = selected.list;
  // A line of the old page stays in view, as the browser's own PageUp keeps one.
  const page = Math.max(list.clientHeight - 40, 40);
  let top: number;
  if (event.key === 'PageUp' && !event.ctrlKey) top = list.scrollTop - page;
  else if (event.key === 'PageDown' && !event.ctrlKey) top = list.scrollTop + page;
  else if (event.key === 'Home' && event.ctrlKey) top = 0;
  else if (event.key === 'End' && event.ctrlKey) top = list.scrollHeight;
  else return;
  event.preventDefault();
  list.scrollTop = top;
  // Already at the top nothing scrolled, so no scroll event asks for older lines.
  if (top <= 0) loadOlder(selected);
}

input.addEventListener('keydown', scrollFromComposer);

// A pasted page goes out a message per line, in order, as from the terminal client (the
// input holds one line, and joined the lines with spaces); what follows the last line break
// stays in the input, as if typed. Blank lines are skipped.
input.addEventListener('paste', (event) => {
  const pasted = event.clipboardData?.getData('text/plain') ?? '';
  if (!/[\r\n]/.test(pasted)) return;
  event.preventDefault();
  const start = input.selectionStart ?? input.value.length;
  const end = input.selectionEnd ?? start;
  const lines = `${input.value.slice(0, start)}${pasted}${input.value.slice(end)}`.split(
    /\r\n|\r|\n/,
  );
  const rest = lines.pop() ?? '';
  const whole = lines.filter((l) => l.trim() !== '');
  // None goes if one is held back: the page is kept whole in order, not sent with a hole.
  if (whole.some(heldBack)) return;
  input.value = rest;
  // In order: a line that waits for an answer (\join) goes before the lines after it.
  void whole.reduce((before, line) => before.then(() => submit(line)), Promise.resolve());
});
