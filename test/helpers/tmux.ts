/**
 * A tmux server of a test's own (its own socket), so nothing else's sessions are touched:
 * `confab chat` in a real terminal, a session named "chat".
 */
import { execFileSync } from 'node:child_process';

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
  /** Ends the server and every session on it, if it still runs. */
  kill(): void;
}

export function privateTmux(name: string): PrivateTmux {
  const socket = `${name}-${process.pid}`;
  const tmux = (...args: string[]) =>
    execFileSync('tmux', ['-L', socket, ...args], { encoding: 'utf8' });
  return {
    tmux,
    screen: (escapes = false) =>
      tmux('capture-pane', '-p', ...(escapes ? ['-e'] : []), '-t', 'chat'),
    newChat: async (...args: string[]) => {
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
    },
    kill: () => {
      try {
        tmux('kill-server');
      } catch {
        // already gone with its last session
      }
    },
  };
}
