import net from 'node:net';
import { FrameDecoder, type FrameRefusal } from '../../src/protocol/frame-decoder.js';
import { type ParsedServerMessage, parseServerText } from '../../src/protocol/message-codec.js';

/** Python's json.dumps with default settings: ", " and ": " separators, ASCII only. */
export function pyDumps(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') {
    return JSON.stringify(value).replace(
      /[\u007f-\uffff]/g,
      (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
    );
  }
  if (typeof value === 'number') {
    if (Number.isInteger(value)) return String(value);
    return String(value)
      .replace(/e([+-])(\d)$/, 'e$10$2')
      .replace(/e(\d)/, 'e+$1');
  }
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (Array.isArray(value)) return `[${value.map(pyDumps).join(', ')}]`;
  const entries = Object.entries(value as Record<string, unknown>);
  return `{${entries.map(([k, v]) => `${pyDumps(k)}: ${pyDumps(v)}`).join(', ')}}`;
}

const utf8 = new TextDecoder();

/**
 * A scripted raw socket: sends exactly the bytes it is given and records every
 * frame it receives, however the server delimits them.
 */
export class RawClient {
  readonly received: ParsedServerMessage[] = [];
  readonly rawFrames: string[] = [];
  /** What the decoder skipped of the server's output (expected: nothing). */
  readonly refusals: FrameRefusal[] = [];
  readonly closed: Promise<void>;
  isClosed = false;
  private waiters: (() => void)[] = [];
  private readonly decoder: FrameDecoder;

  private constructor(readonly socket: net.Socket) {
    this.decoder = new FrameDecoder(1 << 20, {
      frame: (frame) => {
        const text = utf8.decode(frame);
        this.rawFrames.push(text);
        const message = parseServerText(text);
        if (message !== undefined) this.received.push(message);
        this.wake();
      },
      refused: (reason) => {
        // A server that sends what a decoder refuses is a finding, not noise.
        this.refusals.push(reason);
        this.wake();
      },
    });
    socket.on('data', (chunk: Buffer) => this.decoder.push(chunk));
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.isClosed = true;
        this.wake();
        resolve();
      }),
    );
  }

  /** Wraps a socket that is already connected (TLS, or with a chosen source address). */
  static wrap(socket: net.Socket): RawClient {
    return new RawClient(socket);
  }

  /** Connects to `host`, from `localAddress` if given (any 127.0.0.0/8 address). */
  static open(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port, noDelay: true, localAddress });
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RawClient(socket));
      });
      socket.once('error', reject);
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Sends a request the way the course client does: bare json.dumps, no delimiter. */
  sendPy(value: unknown): void {
    this.socket.write(pyDumps(value));
  }

  write(data: string | Uint8Array): void {
    this.socket.write(data);
  }

  /** Resolves with the first not-yet-taken message matching `cmd`, waiting for it. */
  async expect(cmd: string, timeoutMs = 5000): Promise<ParsedServerMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.received.findIndex((m) => m.cmd === cmd);
      if (index >= 0) return this.received.splice(index, 1)[0]!;
      if (this.isClosed)
        throw new Error(`closed while waiting for "${cmd}"; got ${this.describe()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for "${cmd}"; got ${this.describe()}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /**
   * Waits (bounded) until `n` messages that `what` accepts are in `received`
   * (arrived and not taken by `expect`); resolves with the first of them.
   */
  async waitFor(
    what: (m: ParsedServerMessage) => boolean,
    n = 1,
    timeoutMs = 20_000,
  ): Promise<ParsedServerMessage> {
    const started = Date.now();
    const deadline = started + timeoutMs;
    for (let i = 0; i < 2_000 && Date.now() < deadline; i++) {
      const found = this.received.filter(what);
      if (found.length >= n) return found[0]!;
      if (this.isClosed) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const state = this.isClosed ? 'closed by then' : 'still open';
    throw new Error(
      `waited ${Date.now() - started} ms for ${n} message(s), ${state}; got ${this.describe()}`,
    );
  }

  /** Waits for the server to close the connection. */
  async expectClose(timeoutMs = 5000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('server did not close the connection')), timeoutMs);
    });
    try {
      await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Takes everything received so far. */
  drain(): ParsedServerMessage[] {
    return this.received.splice(0);
  }

  describe(): string {
    return JSON.stringify(this.received);
  }

  close(): void {
    this.socket.destroy();
  }

  end(): void {
    this.socket.end();
  }
}

/** Connects and joins with a bare course-style CONNECT. */
export async function join(port: number, nickname: string, extra: object = {}): Promise<RawClient> {
  const client = await RawClient.open(port);
  client.sendPy({ cmd: '0', nickname, ...extra });
  await client.expect('03');
  return client;
}

/** For clients that each sent CONNECT: which of them were let in ("03"). */
export function admitted(clients: RawClient[], timeoutMs = 10_000): Promise<boolean[]> {
  return Promise.all(
    clients.map((c) =>
      c.expect('03', timeoutMs).then(
        () => true,
        () => false,
      ),
    ),
  );
}
