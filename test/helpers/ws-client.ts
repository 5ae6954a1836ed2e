import WebSocket from 'ws';

/** A WebSocket client that records every JSON message it receives. */
export async function wsClient(port: number, headers: Record<string, string> = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers });
  const received: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  ws.on('message', (data) => {
    received.push(JSON.parse(String(data)));
    for (const w of waiters.splice(0)) w();
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const expect = async (cmd: string, timeoutMs = 5000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = received.findIndex((m) => m.cmd === cmd);
      if (i >= 0) return received.splice(i, 1)[0]!;
      if (Date.now() > deadline) throw new Error(`no "${cmd}"; got ${JSON.stringify(received)}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 50);
      });
    }
  };
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  return { ws, received, expect, closed, send: (m: object) => ws.send(JSON.stringify(m)) };
}
