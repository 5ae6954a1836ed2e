/**
 * The heap of a server started as its own process with `--inspect=127.0.0.1:0`
 * (NODE_OPTIONS), read over the inspector protocol: for tests where memory is
 * the question and only a separate process gives a heap free of the test's own.
 */
import WebSocket from 'ws';

/** The inspector's WebSocket address, from what the process wrote to stderr. */
export function inspectorUrl(output: string): string | undefined {
  return /ws:\/\/127\.0\.0\.1:\d+\/[\w-]+/.exec(output)?.[0];
}

export class Inspector {
  private nextId = 0;
  private readonly pending = new Map<
    number,
    { resolve: (result: unknown) => void; reject: (error: Error) => void }
  >();

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data: WebSocket.RawData) => {
      const message = JSON.parse(data.toString()) as {
        id?: number;
        result?: unknown;
        error?: { message: string };
      };
      if (message.id === undefined) return;
      const call = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.error !== undefined) call?.reject(new Error(message.error.message));
      else call?.resolve(message.result);
    });
    ws.on('close', () => {
      for (const call of this.pending.values()) call.reject(new Error('inspector closed'));
      this.pending.clear();
    });
  }

  static async connect(url: string): Promise<Inspector> {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new Inspector(ws);
  }

  private call(method: string): Promise<unknown> {
    const id = ++this.nextId;
    this.ws.send(JSON.stringify({ id, method, params: {} }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }

  /** Bytes of the JavaScript heap in use after full garbage collections. */
  async heapAfterGc(): Promise<number> {
    // Three: objects freed by one collection's finalizers go in the next.
    for (let i = 0; i < 3; i++) await this.call('HeapProfiler.collectGarbage');
    const usage = (await this.call('Runtime.getHeapUsage')) as { usedSize: number };
    return usage.usedSize;
  }

  /** Closes the session: a process with a debugger attached waits for it before exiting. */
  close(): void {
    this.ws.close();
  }
}
