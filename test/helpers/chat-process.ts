import { type ChildProcess, spawn } from 'node:child_process';
import { killedAfterFile } from './children.js';
import { CLI, stopProcess } from './servers.js';

/** `confab chat` as a spawned process, driven through its stdin like a user would. */
export class ChatProcess {
  output = '';
  readonly exited: Promise<number | null>;
  private constructor(readonly child: ChildProcess) {
    child.stdout!.on('data', (d: Buffer) => {
      this.output += d.toString();
    });
    child.stderr!.on('data', (d: Buffer) => {
      this.output += d.toString();
    });
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  static start(args: string[], env: Record<string, string> = {}): ChatProcess {
    const child = killedAfterFile(
      spawn(process.execPath, [CLI, 'chat', ...args], {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...process.env, NO_COLOR: '', ...env },
      }),
    );
    return new ChatProcess(child);
  }

  type(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  /** Waits until the output contains the text (or matches the pattern). */
  async waitFor(pattern: string | RegExp, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const found = () =>
      typeof pattern === 'string' ? this.output.includes(pattern) : pattern.test(this.output);
    while (!found()) {
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${pattern}; output:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  stop(): Promise<void> {
    return stopProcess(this.child);
  }
}
