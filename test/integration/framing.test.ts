import net from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ChatClient } from '../../src/client/chat-client.js';
import { ErrorCode } from '../../src/protocol/codes.js';
import { join, pyDumps } from '../helpers/raw-client.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';

/** The RTT request that used to take the server down: 20,000 levels in ~40 KB. */
const DEEP_RTT = `{"cmd":"6","beginTime":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;

async function withServer(
  run: (server: SpawnedServer) => Promise<void>,
  args: string[] = [],
): Promise<void> {
  const server = await spawnServer(args);
  try {
    await run(server);
  } finally {
    await server.stop();
  }
}

/** A bystander pair still chats both ways, and the server process is still running. */
async function assertAlive(server: SpawnedServer, tag: string): Promise<void> {
  expect(server.child.exitCode).toBeNull();
  const a = await ChatClient.connect({ port: server.port, nickname: `${tag}-a` });
  const b = await ChatClient.connect({ port: server.port, nickname: `${tag}-b` });
  const got = new Promise<string>((resolve) => b.once('chat', (m) => resolve(m.msg)));
  a.chat('still here');
  expect(await got).toBe('still here');
  expect(await b.version()).toBe('1');
  await a.exit();
  await b.exit();
  expect(server.child.exitCode).toBeNull();
}

describe('framing against a course-style client (no newlines)', () => {
  it('answers the next request at once after a stray byte', async () => {
    await withServer(async (server) => {
      const py = await join(server.port, 'py');
      for (const stray of ['x', '}', ']]', '\u0000']) {
        py.write(stray);
        py.sendPy({ cmd: '4' });
        // Before the fix the decoder waited for a newline that never came.
        expect(await py.expect('40')).toEqual({ cmd: '40', serverVersion: '1' });
      }
      // Course clients hear nothing about refused bytes.
      expect(py.drain()).toEqual([]);
      expect(py.refusals).toEqual([]);
      py.sendPy({ cmd: '1' });
      expect((await py.expect('10')).users).toHaveLength(1);
      py.close();
    });
  });

  it('survives the deep-nesting RTT frame and goes on serving that client and others', async () => {
    await withServer(async (server) => {
      const py = await join(server.port, 'py');
      py.write(DEEP_RTT);
      py.sendPy({ cmd: '6', beginTime: 1590314400.123456 });
      expect(await py.expect('60')).toEqual({ cmd: '60', beginTime: 1590314400.123456 });
      expect(py.drain()).toEqual([]);

      // An opted-in client is told why; a stranger's deep CONNECT just ends it.
      const informed = await join(server.port, 'informed', { caps: ['errors'] });
      informed.write(DEEP_RTT);
      expect(await informed.expect('90')).toMatchObject({ code: ErrorCode.NESTED_TOO_DEEP });
      informed.sendPy({ cmd: '4' });
      await informed.expect('40');

      const stranger = net.connect({ port: server.port, host: '127.0.0.1' });
      stranger.on('error', () => {});
      stranger.resume();
      stranger.write(DEEP_RTT);
      await new Promise((resolve) => stranger.once('close', resolve));

      await assertAlive(server, 'tcp');
      py.close();
      informed.close();
    });
  });

  it('refuses a frame of thousands of fields and goes on serving that client', async () => {
    await withServer(async (server) => {
      let fields = '{"cmd": "6", "beginTime": 1.5';
      for (let i = 0; fields.length < 60_000; i++) fields += `, "k${i}": ${i}`;
      const py = await join(server.port, 'py');
      py.write(`${fields}}`);
      py.sendPy({ cmd: '6', beginTime: 2.5 });
      // Refused, not answered: the next answer is the next request's.
      expect(await py.expect('60')).toEqual({ cmd: '60', beginTime: 2.5 });
      expect(py.drain()).toEqual([]);
      const informed = await join(server.port, 'informed', { caps: ['errors'] });
      informed.write(`${fields}}`);
      expect(await informed.expect('90')).toMatchObject({ code: ErrorCode.TOO_MANY_VALUES });
      informed.sendPy({ cmd: '4' });
      await informed.expect('40');
      await assertAlive(server, 'tcp');
      py.close();
      informed.close();
    });
  });

  it('refuses a deeply nested WebSocket message before parsing it', async () => {
    await withServer(async (server) => {
      const ws = new WebSocket(`ws://127.0.0.1:${server.httpPort}/ws`);
      const received: { cmd: string; code?: number }[] = [];
      let wake = () => {};
      ws.on('message', (data) => {
        received.push(JSON.parse(String(data)));
        wake();
      });
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      const next = async (cmd: string) => {
        for (let i = 0; i < 100; i++) {
          const at = received.findIndex((m) => m.cmd === cmd);
          if (at >= 0) return received.splice(at, 1)[0]!;
          await new Promise<void>((resolve) => {
            wake = resolve;
            setTimeout(resolve, 50);
          });
        }
        throw new Error(`no "${cmd}"; got ${JSON.stringify(received)}`);
      };
      ws.send(JSON.stringify({ cmd: '0', nickname: 'web', caps: ['errors'] }));
      await next('03');
      ws.send(DEEP_RTT);
      expect(await next('90')).toMatchObject({ code: ErrorCode.NESTED_TOO_DEEP });
      ws.send(JSON.stringify({ cmd: '4' }));
      await next('40');
      ws.close();
      await assertAlive(server, 'ws');
    });
  });
});

describe('reads that carry many frames', () => {
  // Generated reads: plain and escaped text, multibyte characters, frames that are no
  // UTF-8, json.dumps's spelling and confab's, cut into writes at random places.
  it('delivers every chat of a read, whatever its characters and wherever the writes split', async () => {
    await withServer(
      async (server) => {
        const sender = await join(server.port, 'sender');
        const receiver = await join(server.port, 'receiver');
        const chars = ['a', 'Z', '7', ' ', '!', '~', '"', '\\', '/', '안', '녕', 'é', '😀'];
        const text = fc
          .array(fc.constantFrom(...chars), { minLength: 1, maxLength: 40 })
          .map((cs) => cs.join(''));
        const chat = fc.record({
          msg: text,
          // confab's own spelling takes the request fast path, json.dumps's the full one.
          python: fc.boolean(),
          // A frame that is not UTF-8 is refused and reaches nobody.
          broken: fc.boolean(),
        });
        let round = 0;
        await fc.assert(
          fc.asyncProperty(
            fc.array(chat, { minLength: 1, maxLength: 30 }),
            fc.array(fc.nat(), { maxLength: 2 }),
            async (chats, cuts) => {
              round++;
              const frames = chats.map(({ msg, python, broken }) => {
                if (broken)
                  return Buffer.from([...Buffer.from('{"cmd":"7","msg":"'), 0xff, 0x22, 0x7d]);
                const body = python
                  ? pyDumps({ cmd: '7', msg })
                  : JSON.stringify({ cmd: '7', msg });
                return Buffer.from(body);
              });
              const end = `end ${round}`;
              const all = Buffer.concat([
                ...frames,
                Buffer.from(JSON.stringify({ cmd: '7', msg: end })),
              ]);
              const at = [...new Set(cuts.map((c) => c % all.length))].sort((x, y) => x - y);
              let from = 0;
              for (const cut of [...at, all.length]) {
                if (cut > from) sender.write(all.subarray(from, cut));
                from = cut;
              }
              await receiver.waitFor((m) => m.cmd === '70' && m.msg === end);
              const got = receiver
                .drain()
                .filter((m) => m.cmd === '70')
                .map((m) => m.msg);
              expect(got).toEqual([...chats.filter((c) => !c.broken).map((c) => c.msg), end]);
            },
          ),
          { numRuns: 40 },
        );
        expect(server.child.exitCode).toBeNull();
        sender.close();
        receiver.close();
      },
      ['--rate-limit', '0'],
    );
  });
});

describe('ChatClient', () => {
  it('skips a reply larger than its frame limit and keeps reading', async () => {
    // A stand-in server: confab never sends a message this large.
    const sockets: net.Socket[] = [];
    const fake = net.createServer((socket) => {
      sockets.push(socket);
      socket.once('data', () => {
        socket.write('{"cmd":"03","serverAddress":["127.0.0.1",1],"userCount":1,"caps":[]}\n');
        // Text inside the oversize message that would pose as a frame if the
        // client resumed in the middle of it.
        const inner = '{"cmd":"70","from":"mallory","msg":"spoofed"}';
        const big = JSON.stringify({
          cmd: '70',
          from: 'big',
          msg: `${'x'.repeat(1024 * 1024)}\n${inner}`,
        });
        socket.write(`${big}\n`);
        socket.write('{"cmd":"70","from":"bob","msg":"after"}\n');
      });
    });
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    const { port } = fake.address() as net.AddressInfo;
    try {
      const client = await ChatClient.connect({ port, nickname: 'ann' });
      const chats: string[] = [];
      const after = new Promise<void>((resolve) =>
        client.on('chat', (m) => {
          chats.push(`${m.from}: ${m.msg}`);
          if (m.from === 'bob') resolve();
        }),
      );
      await after;
      expect(chats).toEqual(['bob: after']);
      client.destroy();
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => fake.close(resolve));
    }
  });
});
