/**
 * A tmux server of a test's own (its own socket), so nothing else's sessions are touched:
 * `confab chat` in a real terminal, a session named "chat".
 */
import { execFileSync } from 'node:child_process';
import { CLI } from './servers.js';

export interface ChatTerminal {
  /** The terminal's width (default 100); it is 20 rows high. */
  columns?: number;
  /** Colours on (NO_COLOR unset); off by default. */
  color?: boolean;
  /** Put before the client's command, e.g. a pipe into it. */
  before?: string;
}

export interface PrivateTmux {
  /** Runs a tmux command on this server; its output. */
  tmux(...args: string[]): string;
  /** What the "chat" session shows; with `escapes`, its colours and attributes too. */
  screen(escapes?: boolean): string;
  /**
   * Starts the "chat" session (`new-session -d -s chat ...args`) once any earlier one has
   * gone: a session whose client has just exited may still be closing.
   */
  newChat(...args: string[]): Promise<void>;
  /** `newChat` running `confab chat <nickname> --port <port>` in an xterm-256color terminal. */
  chatAs(nickname: string, port: number, terminal?: ChatTerminal): Promise<void>;
  /** Ends the server and every session on it, if it still runs. */
  kill(): void;
}

export function privateTmux(name: string): PrivateTmux {
  const socket = `${name}-${process.pid}`;
  const tmux = (...args: string[]) =>
    execFileSync('tmux', ['-L', socket, ...args], { encoding: 'utf8' });
  const newChat = async (...args: string[]) => {
    const exists = () => {
      try {
        tmux('has-session', '-t', '=chat');
        return true;
      } catch {
        return false;
      }
    };
    try {
      tmux('kill-session', '-t', '=chat');
    } catch {
      // none left, or it went away (with the tmux server) just now
    }
    for (let i = 0; i < 100 && exists(); i++) await new Promise((r) => setTimeout(r, 20));
    tmux('new-session', '-d', '-s', 'chat', ...args);
  };
  return {
    tmux,
    screen: (escapes = false) =>
      tmux('capture-pane', '-p', ...(escapes ? ['-e'] : []), '-t', 'chat'),
    newChat,
    chatAs: (nickname, port, { columns = 100, color = false, before = '' } = {}) =>
      newChat(
        '-x',
        String(columns),
        '-y',
        '20',
        `${before}env ${color ? '-u NO_COLOR' : 'NO_COLOR=1'} TERM=xterm-256color CONFAB_SAVE_SESSION=0 ${process.execPath} ${CLI} chat ${nickname} --port ${port}`,
      ),
    kill: () => {
      try {
        tmux('kill-server');
      } catch {
        // already gone with its last session
      }
    },
  };
}
