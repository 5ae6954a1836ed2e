import { readFileSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import type { ConfabServer } from '../../src/server.js';
import { ChatProcess } from '../helpers/chat-process.js';
import { join } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';
import { makeCertificate } from '../helpers/tls-cert.js';

let dir: string;
let cert: string;
let server: ConfabServer;
let tlsPort: number;

beforeAll(async () => {
  let key: string;
  ({ dir, cert, key } = makeCertificate());
  server = await startConfab({ 'tls-port': '0', 'tls-cert': cert, 'tls-key': key });
  tlsPort = server.tlsAddress!.port;
});

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('confab chat --tls', () => {
  it('joins over TLS with --ca and chats with a plain TCP member', async () => {
    const bob = await join(server.address.port, 'bob');
    const ann = ChatProcess.start(['ann', '--tls', '--ca', cert, '--port', String(tlsPort)]);
    try {
      await ann.waitFor(`Connected to 127.0.0.1:${tlsPort} as ann. You are the 2nd user.`);
      expect(await bob.expect('8')).toMatchObject({ nickname: 'ann' });
      ann.type('hello over tls');
      expect(await bob.expect('70')).toEqual({ cmd: '70', from: 'ann', msg: 'hello over tls' });
      bob.sendPy({ cmd: '7', msg: 'hello in clear' });
      await ann.waitFor('bob: hello in clear');
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
      await bob.expect('30');
    } finally {
      bob.close();
      await ann.stop();
    }
  });

  it('takes the TLS settings from CONFAB_TLS and CONFAB_CA, and checks --servername', async () => {
    const cat = ChatProcess.start(['cat', '--port', String(tlsPort)], {
      CONFAB_TLS: '1',
      CONFAB_CA: cert,
    });
    try {
      await cat.waitFor('as cat.');
      cat.type('\\exit');
      expect(await cat.exited).toBe(0);
    } finally {
      await cat.stop();
    }
    const dan = ChatProcess.start([
      'dan',
      '--tls',
      '--ca',
      cert,
      '--servername',
      'chat.example.org',
      '--port',
      String(tlsPort),
    ]);
    try {
      expect(await dan.exited).toBe(1);
      expect(dan.output.trim().split('\n')).toHaveLength(1);
      expect(dan.output).toMatch(/certificate is not trusted.*chat\.example\.org.*--servername/);
    } finally {
      await dan.stop();
    }
  });

  it('refuses a certificate it cannot verify, in one clear line, with exit status 1', async () => {
    const eve = ChatProcess.start(['eve', '--tls', '--port', String(tlsPort)]);
    try {
      expect(await eve.exited).toBe(1);
      const lines = eve.output.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(
        new RegExp(
          `^Could not connect to 127\\.0\\.0\\.1:${tlsPort} over TLS: the server's certificate is not trusted: self-signed certificate\\. Use --ca FILE to trust it\\.$`,
        ),
      );
    } finally {
      await eve.stop();
    }
    // Nothing joined: the nickname never reached the server.
    const check = await ChatClient.connect({ port: server.address.port, nickname: 'check' });
    expect((await check.users()).map((u) => u[0])).toEqual(['check']);
    await check.exit();
  });

  it('the library verifies by default and connects with the CA given', async () => {
    await expect(
      ChatClient.connect({ port: tlsPort, nickname: 'lib', tls: true }),
    ).rejects.toMatchObject({ kind: 'certificate' });
    const lib = await ChatClient.connect({
      port: tlsPort,
      nickname: 'lib',
      tls: { ca: readFileSync(cert), servername: 'localhost' },
    });
    expect(lib.limits).toMatchObject({ rate: 20, burst: 40, maxMessage: 4096 });
    expect(await lib.version()).toBe('1');
    await lib.exit();
  });
});
