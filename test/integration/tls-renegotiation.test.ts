import { rmSync } from 'node:fs';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConfabServer } from '../../src/server.js';
import { join } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';
import { makeCertificate } from '../helpers/tls-cert.js';

let dir: string;
let server: ConfabServer;
let tlsPort: number;

beforeAll(async () => {
  let cert: string;
  let key: string;
  ({ dir, cert, key } = makeCertificate());
  server = await startConfab({ 'tls-port': '0', 'tls-cert': cert, 'tls-key': key });
  tlsPort = server.tlsAddress!.port;
});

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A TLS 1.2 client may ask for a new handshake whenever it likes, and each costs the
 * server a full handshake: one joined client renegotiating back to back got about 300 a
 * second, half a CPU, for as long as it stayed. Node's own limit (3 in 10 minutes) only
 * emits 'error' on the socket, which the listener logged and the connection survived.
 */
describe('TLS renegotiation', () => {
  it('closes a client that asks to renegotiate', { timeout: 15_000 }, async () => {
    const bob = await join(server.address.port, 'bob');
    const socket = tls.connect({
      port: tlsPort,
      host: '127.0.0.1',
      rejectUnauthorized: false,
      maxVersion: 'TLSv1.2',
    });
    socket.on('error', () => {});
    // Reading, so that the server's close is seen.
    socket.on('data', () => {});
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    try {
      await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
      socket.write(`${JSON.stringify({ cmd: '0', nickname: 'reneg' })}\n`);
      expect(await bob.expect('8')).toMatchObject({ nickname: 'reneg' });
      let done = 0;
      const deadline = Date.now() + 3000;
      // Without the fix every one of these succeeded until the deadline.
      while (!socket.destroyed && Date.now() < deadline && done < 50) {
        const ok = await new Promise<boolean>((resolve) => {
          const started = socket.renegotiate({ rejectUnauthorized: false }, (err) =>
            resolve(err === null || err === undefined),
          );
          if (!started) resolve(false);
          // A client whose renegotiation is refused hears no callback, only the close.
          void closed.then(() => resolve(false));
        });
        if (!ok) break;
        done++;
      }
      await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]);
      expect(socket.destroyed).toBe(true);
      expect(done).toBeLessThan(3);
      // Its session ended like any lost connection; the others are served on.
      expect(await bob.expect('30')).toMatchObject({ nickname: 'reneg' });
    } finally {
      socket.destroy();
      bob.close();
    }
  });
});
