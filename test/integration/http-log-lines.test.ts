import net from 'node:net';
import { networkInterfaces } from 'node:os';
import { describe, expect, it } from 'vitest';
import { freePort, outputOf, serveLogging, stopProcess } from '../helpers/servers.js';

/**
 * docs/security.md, "Terminal and log injection": client strings in log
 * fields are escaped and cut after 100 characters, so one request makes one
 * short line. The HTTP listener's headers are client strings too: a refused
 * WebSocket upgrade logs its Origin, which a client may make as long as
 * Node's header limit (16 KiB), and of bytes each escaped to six or eight.
 */

/** Sends an upgrade from a foreign origin and waits for the 403. */
function refusedUpgrade(port: number, origin: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let reply = '';
    socket.on('data', (d: Buffer) => {
      reply += d.toString('latin1');
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(reply.split('\r\n')[0]!));
    socket.write(
      Buffer.concat([
        Buffer.from('GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: '),
        origin,
        Buffer.from(
          '\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
            'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
        ),
      ]),
    );
  });
}

interface Server {
  httpPort: number;
  output: () => string;
  stop: () => Promise<void>;
}

/** `confab serve` logging in `format`, on free ports given to it (the pretty format is not parsed for them). */
async function serve(format: 'json' | 'pretty', args: string[] = []): Promise<Server> {
  const port = await freePort();
  const httpPort = await freePort();
  const child = serveLogging(format, port, httpPort, undefined, args);
  const output = outputOf(child);
  const server = { httpPort, output, stop: () => stopProcess(child) };
  await waitFor(server, 'Web app on', 0);
  return server;
}

async function waitFor(
  server: Pick<Server, 'output'>,
  text: string,
  from: number,
): Promise<string> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const added = server.output().slice(from);
    if (added.includes(text)) return added;
    if (Date.now() > deadline) throw new Error(`timed out; output:\n${added.slice(0, 2000)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Whether this machine has ::1 to listen on (a container may have no IPv6). */
const ipv6 = Object.values(networkInterfaces()).some((list) =>
  list?.some((i) => i.internal && i.address === '::1'),
);
if (!ipv6) console.log('skipped: no ::1 on this machine');

describe.skipIf(!ipv6)('the web app line at start', () => {
  it('names an IPv6 address in brackets, so that the URL can be opened', async () => {
    const server = await serve('json', ['--host', '::1']);
    try {
      expect(server.output()).toContain(`Web app on http://[::1]:${server.httpPort}/`);
    } finally {
      await server.stop();
    }
  });
});

describe('a refused WebSocket origin in the log', () => {
  for (const format of ['json', 'pretty'] as const) {
    it(`is one short line in the ${format} format, however long the Origin header`, async () => {
      const server = await serve(format);
      try {
        const before = server.output().length;
        // 15,000 bytes of 0x9b: read as latin1, each is U+009B (the one-character CSI),
        // which the JSON format writes as \u009b and the pretty one as <U+009B>.
        const origin = Buffer.concat([Buffer.from('http://'), Buffer.alloc(15_000, 0x9b)]);
        expect(await refusedUpgrade(server.httpPort, origin)).toBe('HTTP/1.1 403 Forbidden');
        const added = await waitFor(server, 'foreign origin refused', before);
        const line = added.split('\n').find((l) => l.includes('foreign origin refused'))!;
        expect(line.length).toBeLessThan(2_000);
        expect(line).toContain('...(+');
        // Still escaped, not raw.
        expect(line).not.toContain('\u009b');
      } finally {
        await server.stop();
      }
    });
  }
});

describe('a malformed HTTP request in the debug log', () => {
  for (const format of ['json', 'pretty'] as const) {
    it(`is one short line in the ${format} format, not the request's bytes`, async () => {
      const server = await serve(format, ['--log-level', 'debug']);
      try {
        const before = server.output().length;
        // A header of 15,000 bytes with a control character in it: Node refuses it unparsed.
        await new Promise<void>((resolve) => {
          const socket = net.connect(server.httpPort, '127.0.0.1');
          socket.on('error', () => {});
          socket.on('close', () => resolve());
          // Read to the end (the 400), or the socket never closes.
          socket.resume();
          socket.end(`GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: ${'a'.repeat(15_000)}\u0001\r\n\r\n`);
        });
        const added = await waitFor(server, 'socket error', before);
        // Node's error carries the bytes it could not parse: written one per line, they made
        // some 211 KB of log per request.
        expect(added.length).toBeLessThan(2_000);
      } finally {
        await server.stop();
      }
    });
  }
});
