/**
 * Two confab nodes over one real redis-server, the second on a machine whose clock runs a
 * month ahead: what the nodes compare (bans' ends, chats' times, history's age) they time by
 * Redis's clock, so the skewed node neither lets a banned member in, nor dates chats a month
 * late, nor prunes every room's history as a month old.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/password.js';
import { RawClient } from '../helpers/raw-client.js';
import { type RedisServer, startRedis, withoutRedis } from '../helpers/redis.js';
import { type SpawnedServer, spawnServer, waitFor } from '../helpers/spawn-server.js';

const skip = withoutRedis();
const MONTH_MS = 30 * 24 * 3600 * 1000;
const SKEWED = pathToFileURL(
  path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/skewed-clock.mjs'),
).href;

describe.skipIf(skip)('a node whose clock is a month ahead', () => {
  let redis: RedisServer;
  let dir: string;
  const nodes: SpawnedServer[] = [];
  const clients: RawClient[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    dir = mkdtempSync(path.join(os.tmpdir(), 'confab-skew-'));
    const config = path.join(dir, 'confab.yaml');
    writeFileSync(
      config,
      `operators:\n  - name: teacher\n    password: "${hashPassword('open sesame')}"\n`,
    );
    const args = ['--redis', redis.url, '--cluster-timeout', '2', '--rate-limit', '0'];
    nodes.push(await spawnServer([...args, '--config', config]));
    nodes.push(
      await spawnServer([...args, '--config', config], {
        NODE_OPTIONS: `--import ${SKEWED}`,
        CONFAB_TEST_CLOCK_SKEW_MS: String(MONTH_MS),
      }),
    );
  }, 60_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    for (const n of nodes) await n.stop();
    await redis?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  async function member(node: number, nickname: string, extra: object = {}): Promise<RawClient> {
    const client = await RawClient.open(nodes[node]!.port);
    clients.push(client);
    client.sendPy({ cmd: '0', nickname, ...extra });
    await client.expect('03', 10_000);
    return client;
  }

  async function operator(node: number, nickname: string): Promise<RawClient> {
    const op = await member(node, nickname, { caps: ['errors', 'moderation'] });
    op.sendPy({ cmd: '92', name: 'teacher', password: 'open sesame' });
    await op.expect('93');
    return op;
  }

  /** The first answer to a CONNECT as `nickname` on `node`: "03", or "90 <code>". */
  async function answerTo(node: number, nickname: string): Promise<string> {
    const client = await RawClient.open(nodes[node]!.port);
    clients.push(client);
    client.sendPy({ cmd: '0', nickname, caps: ['errors'] });
    const first = await Promise.race([client.expect('03', 5_000), client.expect('90', 5_000)]);
    client.close();
    return first.cmd === '90' ? `90 ${String(first.code)}` : first.cmd;
  }

  it('says at start that its clock is off, and by how much', async () => {
    await waitFor(nodes[1]!.output, "this machine's clock is 2592000 s ahead of Redis's");
    expect(nodes[0]!.output()).not.toContain("this machine's clock is");
  });

  it("keeps another node's ten-minute ban in force", async () => {
    const op = await operator(0, 'op-a');
    op.sendPy({ cmd: '95', mask: 'mallory', reason: 'spam', seconds: 600 });
    await op.expect('98');
    // The skewed node hears of the ban over Redis a moment later.
    let answer = '';
    for (let i = 0; i < 50 && answer !== '90 2006'; i++) {
      answer = await answerTo(1, 'mallory');
      if (answer !== '90 2006') await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(answer).toBe('90 2006');
  });

  it("times its own ban by Redis's clock: it ends in ten minutes, not a month and ten", async () => {
    const op = await operator(1, 'op-b');
    op.sendPy({ cmd: '95', mask: 'trudy', reason: 'spam', seconds: 600 });
    await op.expect('98');
    const other = await operator(0, 'op-c');
    other.sendPy({ cmd: '97' });
    const list = await other.expect('98');
    const ban = (list.bans as { mask: string; expires: number | null }[]).find(
      (b) => b.mask === 'trudy',
    );
    expect(ban?.expires).toBeGreaterThan(Date.now() + 590_000);
    expect(ban?.expires).toBeLessThan(Date.now() + 610_000);
  });

  it("dates its members' chats by Redis's clock", async () => {
    const reader = await member(0, 'reader', { caps: ['rooms'] });
    const writer = await member(1, 'writer', { caps: ['rooms'] });
    writer.sendPy({ cmd: '7', msg: 'what time is it?' });
    const chat = await reader.expect('70', 10_000);
    expect(chat.msg).toBe('what time is it?');
    expect(Math.abs((chat.at as number) - Date.now())).toBeLessThan(60_000);
  });
});

describe.skipIf(skip)('history pruned by a node whose clock is a month ahead', () => {
  let redis: RedisServer;
  const nodes: SpawnedServer[] = [];
  const clients: RawClient[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    // The writer keeps history for good and prunes nothing: only the skewed node prunes.
    nodes.push(await spawnServer(['--redis', redis.url, '--history-max-age', '0']));
  }, 60_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    for (const n of nodes) await n.stop();
    await redis?.stop();
  }, 60_000);

  /** A node a month ahead that prunes history older than `maxAge` seconds every 200 ms. */
  async function skewedPruner(maxAge: number): Promise<SpawnedServer> {
    const node = await spawnServer(['--redis', redis.url, '--history-max-age', String(maxAge)], {
      NODE_OPTIONS: `--import ${SKEWED}`,
      CONFAB_TEST_CLOCK_SKEW_MS: String(MONTH_MS),
      CONFAB_TEST_MINUTE_MS: '200',
    });
    nodes.push(node);
    return node;
  }

  /** Asks `check` every 100 ms, for 10 s at most. */
  async function until(check: () => Promise<boolean>): Promise<void> {
    for (let i = 0; i < 100; i++) {
      if (await check()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('never came true in 10 s');
  }

  /** The lobby's stored chats, as `reader` on the writer's node reads them. */
  async function stored(reader: RawClient): Promise<string[]> {
    reader.sendPy({ cmd: '106', room: 'lobby', limit: 100 });
    const page = await reader.expect('107', 10_000);
    return (page.messages as { msg: string }[]).map((m) => m.msg);
  }

  it("keeps an hour of history by Redis's clock, and prunes what is older", async () => {
    const writer = await RawClient.open(nodes[0]!.port);
    clients.push(writer);
    writer.sendPy({ cmd: '0', nickname: 'writer', caps: ['rooms', 'history'] });
    await writer.expect('03', 10_000);
    writer.sendPy({ cmd: '7', msg: 'written just now' });
    await until(async () => (await stored(writer)).includes('written just now'));

    // An hour's age: by its own clock the chat is a month old; by Redis's, a moment.
    const hour = await skewedPruner(3600);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await stored(writer)).toContain('written just now');
    await hour.stop();
    nodes.splice(nodes.indexOf(hour), 1);
    // Its last prune's lock is taken for half the minute the node was started with.
    const direct = new Redis(redis.url);
    try {
      const locks = await direct.keys('*prune-lock');
      if (locks.length > 0) await direct.del(...locks);
    } finally {
      direct.disconnect();
    }

    // The same node keeping a second's age prunes it: the prune runs, and by age.
    await skewedPruner(1);
    await until(async () => !(await stored(writer)).includes('written just now'));
  }, 60_000);
});
