import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ChatClient, ChatClientError } from '../../src/client/chat-client.js';
import type { ConfabServer } from '../../src/server.js';
import { ChatProcess } from '../helpers/chat-process.js';
import { join, type RawClient } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';
import { privateTmux } from '../helpers/tmux.js';

let server: ConfabServer | undefined;
let spawned: SpawnedServer | undefined;
const clients: (ChatClient | RawClient)[] = [];
let chatProcess: ChatProcess | undefined;

afterEach(async () => {
  await chatProcess?.stop();
  chatProcess = undefined;
  for (const c of clients.splice(0)) {
    if (c instanceof ChatClient) c.destroy();
    else c.close();
  }
  await server?.stop();
  server = undefined;
  await spawned?.stop();
  spawned = undefined;
});

/** Resolves once `check` holds, or rejects after a generous bound. */
async function until(
  what: string,
  check: () => boolean,
  timeoutMs = 12_000,
  show: () => string = () => '',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${show()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('ChatClient paces itself to the limits in "03"', () => {
  it('delivers 200 chats and interleaved calls in order, with no refusal', async () => {
    // A burst of 20 leaves the pacer 2 tokens of headroom: 42 ms of network jitter. With 10
    // (22 ms), a CI machine running other suites beside this one once delayed a request past
    // it, the server refused it as a flood, and bob never heard it.
    server = await startConfab({ 'rate-limit': '50', 'rate-burst': '20' });
    const port = server.address.port;
    const ann = await ChatClient.connect({ port, nickname: 'ann' });
    const bob = await ChatClient.connect({ port, nickname: 'bob' });
    clients.push(ann, bob);
    expect(ann.limits).toEqual({ rate: 50, burst: 20, maxMessage: 4096 });

    const refusals: unknown[] = [];
    ann.on('server-error', (e) => refusals.push(e));
    const order: string[] = [];
    bob.on('chat', (m) => order.push(m.msg));
    const waiting: number[] = [];
    ann.on('queue', (q) => waiting.push(q.waiting));

    const calls: Promise<unknown>[] = [];
    const expected: string[] = [];
    for (let i = 0; i < 200; i++) {
      ann.chat(`m${i}`);
      expected.push(`m${i}`);
      if (i % 20 === 5) {
        // Replies pair with calls in wire order: each USERS sees both members.
        calls.push(ann.users().then((users) => users.map((u) => u[0])));
      }
    }
    calls.push(ann.version(), ann.rtt());
    const results = await Promise.all(calls);
    expect(results.slice(0, 10)).toEqual(new Array(10).fill(['ann', 'bob']));
    expect(results[10]).toBe('1');
    await until(
      'bob to hear all 200',
      () => order.length >= 200,
      12_000,
      () => `: heard ${order.length}, refusals ${JSON.stringify(refusals)}`,
    );
    await bob.version();
    expect(order).toEqual(expected);
    expect(refusals).toEqual([]);
    expect(Math.max(...waiting)).toBeGreaterThan(150);
    expect(waiting.at(-1)).toBe(0);
    expect(ann.isClosed).toBe(false);
    await ann.exit();
  });

  it('paces a RENAME as one request for each of its rooms, and is never refused', async () => {
    server = await startConfab({ 'rate-limit': '10', 'rate-burst': '12' });
    const port = server.address.port;
    const ann = await ChatClient.connect({ port, nickname: 'ann' });
    clients.push(ann);
    const refusals: unknown[] = [];
    ann.on('server-error', (e) => refusals.push(e));
    for (const room of ['r1', 'r2', 'r3', 'r4']) await ann.join(room);
    const names: Promise<string>[] = [];
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 8; i++) ann.chat(`m${round}.${i}`);
      names.push(ann.rename(`ann${round}`));
    }
    expect(await Promise.all(names)).toEqual(['ann0', 'ann1', 'ann2']);
    expect(refusals).toEqual([]);
    await ann.exit();
  });

  it('counts the rooms of JOIN_ROOMs not yet answered in what a RENAME behind them costs', async () => {
    server = await startConfab({});
    const ann = await ChatClient.connect({ port: server.address.port, nickname: 'ann' });
    clients.push(ann);
    const refusals: unknown[] = [];
    ann.on('server-error', (e) => refusals.push(e));
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 10; i++) {
      calls.push(ann.join(`r${i}`), ann.rename(`ann${i}`));
    }
    await Promise.all(calls);
    expect(refusals).toEqual([]);
    expect(ann.nickname).toBe('ann9');
    await ann.exit();
  });

  it('drops what is still queued when it leaves, and leaves at once', async () => {
    server = await startConfab({ 'rate-limit': '5', 'rate-burst': '5' });
    const port = server.address.port;
    const ann = await ChatClient.connect({ port, nickname: 'ann' });
    const bob = await ChatClient.connect({ port, nickname: 'bob' });
    clients.push(ann, bob);
    const heard: string[] = [];
    bob.on('chat', (m) => heard.push(m.msg));
    const left = new Promise((r) => bob.once('leave', r));
    for (let i = 0; i < 100; i++) ann.chat(`m${i}`);
    const users = ann.users().catch((err: unknown) => err);
    expect(ann.waiting).toBeGreaterThan(90);
    await ann.exit();
    await left;
    const failure = await users;
    expect(failure).toBeInstanceOf(ChatClientError);
    expect(failure).toMatchObject({ kind: 'closed' });
    // At 5 per second, a queue of 95 would take 19 s; only the burst went out.
    await bob.version();
    expect(heard.length).toBeLessThan(10);
    expect(heard).toEqual(heard.map((_, i) => `m${i}`));
  });
});

describe('confab chat paces a paste', () => {
  it('sends 100 pasted lines whole and in order under the default limits', async () => {
    spawned = await spawnServer(['--http-port', 'off']);
    const port = spawned.port;
    chatProcess = ChatProcess.start(['ann', '--port', String(port)]);
    await chatProcess.waitFor('You are the 1st user');
    const bob = await join(port, 'bob');
    clients.push(bob);
    await chatProcess.waitFor('bob joined');

    const lines = Array.from({ length: 100 }, (_, i) => `pasted line ${i + 1}`);
    chatProcess.child.stdin!.write(`${lines.join('\n')}\n`);
    const got: string[] = [];
    for (let i = 0; i < lines.length; i++) {
      const m = await bob.expect('70', 15_000);
      expect(m.from).toBe('ann');
      got.push(String(m.msg));
    }
    expect(got).toEqual(lines);
    await chatProcess.waitFor(/\(\d+ lines queued/);
    expect(chatProcess.output).not.toMatch(/Refused|too many requests|disconnected/i);
    expect(chatProcess.child.exitCode).toBe(null);
    expect(spawned.output()).not.toMatch(/rate limit reached|flooding/);

    chatProcess.type('\\exit');
    expect(await chatProcess.exited).toBe(0);
    await bob.expect('30');
  });
});

describe('confab chat with piped input', () => {
  it('sends every line of a file before leaving at its end', async () => {
    spawned = await spawnServer(['--http-port', 'off']);
    const port = spawned.port;
    const bob = await join(port, 'bob');
    clients.push(bob);
    chatProcess = ChatProcess.start(['ann', '--port', String(port)]);
    await chatProcess.waitFor('You are the 2nd user');
    const lines = Array.from({ length: 60 }, (_, i) => `from a file ${i + 1}`);
    chatProcess.child.stdin!.end(`${lines.join('\n')}\n`);
    const got: string[] = [];
    for (let i = 0; i < lines.length; i++) got.push(String((await bob.expect('70', 15_000)).msg));
    expect(got).toEqual(lines);
    expect(await chatProcess.exited).toBe(0);
    expect(await bob.expect('30')).toMatchObject({ nickname: 'ann' });
    expect(chatProcess.output).not.toMatch(/Refused/);
  });
});

describe('confab chat in a terminal', () => {
  const { tmux, screen, chatAs, kill } = privateTmux('confab-pacing');

  it('shows the queued count in the prompt while a paste goes out, then the plain prompt', {
    timeout: 40_000,
  }, async () => {
    spawned = await spawnServer(['--http-port', 'off']);
    const port = spawned.port;
    const bob = await ChatClient.connect({ port, nickname: 'bob' });
    clients.push(bob);
    const heard: string[] = [];
    bob.on('chat', (m) => heard.push(m.msg));
    const paste = path.join(tmpdir(), `confab-paste-${process.pid}.txt`);
    const lines = Array.from({ length: 80 }, (_, i) => `typed ${i + 1}`);
    writeFileSync(paste, `${lines.join('\n')}\n`);
    try {
      await chatAs('ann', port);
      const shown = () => `; bob heard ${heard.length}; screen:\n${screen()}`;
      await until('the welcome', () => screen().includes('You are the 2nd user'), 8000, shown);
      tmux('load-buffer', paste);
      tmux('paste-buffer', '-t', 'chat');
      await until(
        'the queued count in the prompt',
        // tmux drops the prompt's trailing space.
        () => /^ann \(\d+ queued\)>$/m.test(screen()),
        8000,
        shown,
      );
      await until('bob to hear all 80', () => heard.length >= 80, 12_000, shown);
      expect(heard).toEqual(lines);
      await until(
        'the plain prompt',
        () => screen().trimEnd().split('\n').at(-1) === 'ann>',
        8000,
        shown,
      );
      expect(screen()).not.toContain('Refused');
      expect(spawned.output()).not.toMatch(/rate limit reached|flooding/);
    } finally {
      kill();
      rmSync(paste, { force: true });
    }
  });
});
