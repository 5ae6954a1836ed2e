/**
 * History across confab nodes when Redis loses data: clients are told live
 * that a room's chats have a hole ("108"), and ids are never handed out twice
 * under one epoch, also after Redis comes back with older data.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';
import { waitFor } from '../helpers/spawn-server.js';

const skip = withoutRedis();
const HISTORY = { caps: ['errors', 'rooms', 'history'] };

type Message = Record<string, unknown> & { cmd: string };

let cluster: TestCluster;
const clients: RawClient[] = [];

async function member(node: number, nickname: string, extra: object = {}): Promise<RawClient> {
  const client = await RawClient.open(cluster.nodes[node]!.port);
  clients.push(client);
  client.sendPy({ cmd: '0', nickname, ...extra });
  // Right after Redis restarted empty, a new nickname waits out the refill (5 s or more).
  await client.expect('03', 15_000);
  return client;
}

const chat = (msg: string) => (m: Message) => m.cmd === '70' && m.msg === msg;

/**
 * Restarts Redis empty; `then` runs once node `node` has noticed it gone (logged it). A chat
 * written to the dead connection before that fails as any request Redis never answered: its
 * sender is closed (3005), which these tests are not about.
 */
function restartRedis(node: number, then: () => void): Promise<void> {
  const server = cluster.nodes[node]!;
  const from = server.output().length;
  return cluster.redis.restart(async () => {
    // The warning of the outage ("Redis (--redis url): read ECONNRESET"), not "… is reachable again".
    await waitFor(() => server.output().slice(from), `Redis (--redis ${cluster.redis.url}): `);
    then();
  });
}

/** `wait`, or its error with the end of what every node logged. */
function withLogs<T>(wait: Promise<T>): Promise<T> {
  return wait.catch((err: unknown) => {
    const logs = cluster.nodes.map((n, i) => `node ${i}:\n${n.output().slice(-4000)}`);
    throw new Error(`${String(err)}\n${logs.join('\n')}`);
  });
}

beforeAll(async () => {
  if (skip) return;
  // Redis restarts here take a while on a busy machine: a node must not take
  // that for being cut off (3006), which these tests are not about.
  cluster = await startCluster(2, ['--max-users', '20', '--cluster-timeout', '30']);
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await cluster?.stop();
}, 60_000);

describe.skipIf(skip)('lost history, told to clients', () => {
  it('tells members with "history" of a new epoch when Redis restarts empty; course clients see nothing new', async () => {
    const h0 = await member(0, 'h0', HISTORY);
    const h1 = await member(1, 'h1', HISTORY);
    const course = await member(1, 'course');
    const header = (await h1.expect('101')) as Message;
    course.sendPy({ cmd: '7', msg: 'before' });
    for (const c of [h0, h1]) await c.waitFor(chat('before'));

    await cluster.redis.restart();
    // Seen once under heavy load: what the nodes logged says where the notice stopped.
    const gaps = await withLogs(
      Promise.all([h0, h1].map((c) => c.waitFor((m) => m.cmd === '108'))),
    );
    for (const gap of gaps) {
      expect(gap).toEqual({
        cmd: '108',
        room: 'lobby',
        epoch: expect.any(String),
        reason: 'epoch',
      });
      expect(gap.epoch).not.toBe(header.epoch);
    }
    h0.sendPy({ cmd: '7', msg: 'after', room: 'lobby' });
    const stored = (await h0.expect('71', 10_000)) as Message;
    const after = await h1.waitFor(chat('after'));
    expect(after.id).toBe(stored.id);
    // The notice comes before the first chat of the new epoch.
    const got = h1.received as Message[];
    expect(got.indexOf(gaps[1]!)).toBeLessThan(got.indexOf(after));
    await course.waitFor(chat('after'));
    expect(course.rawFrames.filter((f) => f.includes('"108"'))).toEqual([]);
    for (const c of [h0, h1, course]) c.close();
  }, 60_000);
  it('tells a sender of the new epoch before the "71"s of its chats there', async () => {
    const s0 = await member(0, 's0', HISTORY);
    const s1 = await member(1, 's1', HISTORY);
    // Ids of the old epoch run above any the new one reaches here.
    for (let i = 1; i <= 40; i++) s0.sendPy({ cmd: '7', msg: `old${i}`, room: 'lobby' });
    await s1.waitFor(chat('old40'));
    await s0.waitFor((m) => m.cmd === '71', 40);
    const oldTop = 40;
    const before = s0.received.length;
    // Sent as Redis comes back: stored at once in the new epoch, while the node has still
    // to read that epoch for the room.
    let sent = 0;
    let pace: NodeJS.Timeout | undefined;
    const restarted = restartRedis(0, () => {
      pace = setInterval(() => {
        if (sent >= 20) return;
        s0.sendPy({ cmd: '7', msg: `new${++sent}`, room: 'lobby' });
        // Answered after the chat's "71", which a later request must not overtake.
        s0.sendPy({ cmd: '1' });
      }, 25);
    });
    try {
      await restarted;
      await withLogs(s0.waitFor((m) => m.cmd === '71', 60));
      await withLogs(s0.waitFor((m) => m.cmd === '10', 20));
    } finally {
      clearInterval(pace);
    }
    const after = (s0.received as Message[]).slice(before);
    let acked = 0;
    let answered = 0;
    for (const m of after) {
      if (m.cmd === '71') acked++;
      // The k-th USERS was sent after the k-th chat.
      if (m.cmd === '10') expect(acked).toBeGreaterThanOrEqual(++answered);
    }
    const gap = after.findIndex((m) => m.cmd === '108');
    expect(gap).toBeGreaterThanOrEqual(0);
    // A "71" before the "108" is of the old epoch (an id above its top so far); after it, of the new.
    const acks = after.map((m, i) => ({ m, i })).filter(({ m }) => m.cmd === '71');
    for (const { m, i } of acks) {
      if (i < gap) expect(Number(m.id)).toBeGreaterThan(oldTop);
      else expect(Number(m.id)).toBeLessThanOrEqual(20);
    }
    for (const c of [s0, s1]) c.close();
  }, 60_000);

  it('shows a course client that joins after Redis restarted empty every chat sent after its join', async () => {
    const e0 = await member(0, 'e0', HISTORY);
    const e1 = await member(1, 'e1', HISTORY);
    for (let i = 1; i <= 8; i++) e0.sendPy({ cmd: '7', msg: `old${i}`, room: 'lobby' });
    await e1.waitFor(chat('old8'));
    await cluster.redis.restart();
    for (const c of [e0, e1]) await c.waitFor((m) => m.cmd === '108');
    // It joins node 1 once its lobby is in the new epoch, before any chat of it: its place
    // is the new epoch's start, not the old top (which hid the first eight chats).
    const course = await member(1, 'latecomer');
    const sent = Array.from({ length: 10 }, (_, i) => `new${i + 1}`);
    for (const msg of sent) e0.sendPy({ cmd: '7', msg, room: 'lobby' });
    await withLogs(e1.waitFor(chat('new10')));
    await withLogs(course.waitFor(chat('new10')));
    expect((course.received as Message[]).filter((m) => m.cmd === '70').map((m) => m.msg)).toEqual(
      sent,
    );
    for (const c of [e0, e1, course]) c.close();
  }, 60_000);

  it('never shows a course client its own chat, also one sent while Redis restarts', async () => {
    const r1 = await member(1, 'r1', HISTORY);
    const speaker = await member(0, 'speaker');
    for (let i = 1; i <= 8; i++) speaker.sendPy({ cmd: '7', msg: `said${i}` });
    await r1.waitFor(chat('said8'));
    // Aimed at the outage: stored in the new epoch, below the ids its node last handed over.
    await restartRedis(0, () => speaker.sendPy({ cmd: '7', msg: 'during' }));
    await r1.waitFor(chat('during'));
    speaker.sendPy({ cmd: '7', msg: 'later' });
    await r1.waitFor(chat('later'));
    // Chats come in order: once the speaker has r1's next one, its own would have come.
    r1.sendPy({ cmd: '7', msg: 'sentinel', room: 'lobby' });
    await speaker.waitFor(chat('sentinel'));
    const shown = (speaker.received as Message[]).filter((m) => m.cmd === '70');
    expect(shown.map((m) => m.msg)).toEqual(['sentinel']);
    for (const c of [r1, speaker]) c.close();
  }, 60_000);

  it('rotates the epoch when Redis comes back with older data: no id is delivered twice under one epoch', async () => {
    const w0 = await member(0, 'w0', HISTORY);
    const w1 = await member(1, 'w1', HISTORY);
    const header = (await w1.expect('101')) as Message;
    // What w1 received, as (epoch, id) pairs: the epoch from "101", then from each "108".
    const pairs = () => {
      let epoch = String(header.epoch);
      const out: string[] = [];
      for (const m of w1.received as Message[]) {
        if (m.cmd === '108') epoch = String(m.epoch);
        if (m.cmd === '70') out.push(`${epoch}/${String(m.id)}`);
      }
      return out;
    };
    const say = async (msg: string) => {
      w0.sendPy({ cmd: '7', msg, room: 'lobby' });
      await w1.waitFor(chat(msg));
    };
    for (const msg of ['a1', 'a2', 'a3']) await say(msg);
    const admin = new Redis(cluster.redis.url, { maxRetriesPerRequest: 1 });
    try {
      expect(await admin.save()).toBe('OK');
    } finally {
      admin.disconnect();
    }
    for (const msg of ['b1', 'b2', 'b3']) await say(msg);
    // Back from the snapshot: the b's are gone, the epoch and a top of the a's are back.
    await cluster.redis.restart();
    const gap = await w1.waitFor((m) => m.cmd === '108');
    expect(gap).toMatchObject({ room: 'lobby', reason: 'epoch' });
    expect(gap.epoch).not.toBe(header.epoch);
    for (const msg of ['c1', 'c2', 'c3']) await say(msg);
    const got = pairs();
    expect(got.length).toBeGreaterThanOrEqual(9);
    expect(new Set(got).size).toBe(got.length);
    // Nothing of before the roll-back was handed over again.
    const texts = (w1.received as Message[]).filter((m) => m.cmd === '70').map((m) => m.msg);
    expect(texts.filter((t) => t === 'a1' || t === 'b1')).toEqual(['a1', 'b1']);
    for (const c of [w0, w1]) c.close();
  }, 60_000);
});
