/**
 * Hostile clients against a three-node cluster (real redis-server, real
 * processes): races the cluster code paths are most likely to get wrong —
 * one resume token on two nodes, one nickname on every node, clients that
 * vanish while their claim is still in Redis, kicks racing joins, floods
 * from every node into one room, and odd HISTORY pages over trimmed
 * history. After each: every node still answers, nothing leaks.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/password.js';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import { until, useCluster } from '../helpers/cluster.js';
import type { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';
import { wsClient } from '../helpers/ws-client.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history', 'moderation'];
const TRIM = 30;

const file = useCluster(
  'cluster-hostile',
  3,
  ['--history-max-messages', String(TRIM), '--max-conns-per-ip', '0'],
  (dir) => {
    const config = path.join(dir, 'confab.yaml');
    writeFileSync(
      config,
      `max-users: 200\noperators:\n  - name: teacher\n    password: "${hashPassword('pw')}"\n`,
    );
    return ['--config', config];
  },
);
const open = (node: number) => file.open(node);

async function member(
  node: number,
  nickname: string,
  extra: object = {},
): Promise<{ c: RawClient; welcome: ParsedServerMessage }> {
  const c = await open(node);
  c.sendPy({ cmd: '0', nickname, caps: CAPS, ...extra });
  const welcome = await c.expect('03', 10_000);
  return { c, welcome };
}

/** Waits (bounded) until `done` holds. */
function waitUntil(what: string, done: () => boolean | Promise<boolean>): Promise<void> {
  return until(what, done, 15_000);
}

let probeCount = 0;

/** A fresh member of `node` that asks USERS and ROOMS, then leaves. */
async function census(node: number): Promise<{ users: string[]; rooms: Map<string, number> }> {
  const { c } = await member(node, `probe${node}x${probeCount++}`);
  c.sendPy({ cmd: '1' });
  const users = (await c.expect('10')).users as [string, string, number][];
  c.sendPy({ cmd: '104' });
  const rooms = (await c.expect('105')).rooms as { room: string; userCount: number }[];
  c.close();
  await c.closed;
  return {
    users: users.map((u) => u[0]).filter((n) => !n.startsWith('probe')),
    rooms: new Map(rooms.map((r) => [r.room, r.userCount])),
  };
}

/** Every node answers a fresh client's VERSION: no process ended or wedged. */
async function allAlive(): Promise<void> {
  for (let i = 0; i < file.cluster.nodes.length; i++) await census(i);
}

/**
 * A race a client can start is no internal error: a node that logs one (level 50 and up)
 * closed a connection it should have served.
 */
const seenOutput: number[] = [];
afterEach(() => {
  if (skip) return;
  const bad: string[] = [];
  file.cluster.nodes.forEach((node, i) => {
    const output = node.output();
    for (const line of output.slice(seenOutput[i] ?? 0).split('\n')) {
      if (/"level":[56]\d/.test(line)) bad.push(line);
    }
    seenOutput[i] = output.length;
  });
  expect(bad).toEqual([]);
});

describe.skipIf(skip)('a hostile client against a cluster', () => {
  it('handles all that a client wrote before it half-closed or closed, behind the claims in Redis', async () => {
    const watcher = await file.join(1, 'eof-watch', { caps: ['rooms'] });
    watcher.sendPy({ cmd: '100', room: 'eofroom' });
    await watcher.expect('101');
    for (const end of ['half', 'close'] as const) {
      const writer = await open(0);
      // One write, as `printf ... | nc -N` sends it: CONNECT, a JOIN_ROOM and chats, EXIT.
      writer.write(
        [
          { cmd: '0', nickname: `eof-${end}`, caps: ['rooms'] },
          { cmd: '7', msg: `lobby ${end}` },
          { cmd: '100', room: 'eofroom' },
          { cmd: '7', msg: `room ${end}`, room: 'eofroom' },
          { cmd: '3' },
        ]
          .map((r) => JSON.stringify(r))
          .join(''),
      );
      if (end === 'half') writer.socket.end();
      else writer.socket.destroy();
      await watcher.waitFor(
        (m) => m.cmd === '30' && m.nickname === `eof-${end}` && m.room === 'eofroom',
        1,
        10_000,
      );
      const chats = watcher.received
        .filter((m) => m.cmd === '70' && m.from === `eof-${end}`)
        .map((m) => m.msg);
      expect(chats, end).toEqual([`lobby ${end}`, `room ${end}`]);
    }
  });

  it('one resume token raced on two nodes takes the session back once', async () => {
    for (let round = 0; round < 4; round++) {
      const nick = `res${round}`;
      const { c: owner, welcome } = await member(0, nick);
      owner.sendPy({ cmd: '100', room: `rr${round}` });
      await waitUntil('the owner in its room', () =>
        owner.received.some((m) => m.cmd === '101' && m.room === `rr${round}`),
      );
      const token = String(welcome.resume);
      const a = await open(1);
      const b = await open(2);
      a.sendPy({ cmd: '0', nickname: `${nick}a`, caps: CAPS, resume: token });
      b.sendPy({ cmd: '0', nickname: `${nick}b`, caps: CAPS, resume: token });
      const [wa, wb] = await Promise.all([a.expect('03', 10_000), b.expect('03', 10_000)]);
      expect([wa.resumed, wb.resumed].filter(Boolean)).toHaveLength(1);
      const winner = wa.resumed ? wa : wb;
      const loser = wa.resumed ? wb : wa;
      expect(winner.nickname).toBe(nick);
      expect(loser.nickname).toBe(wa.resumed ? `${nick}b` : `${nick}a`);
      await owner.expectClose(10_000);
      const seen = await census(1);
      expect(seen.users.filter((u) => u === nick)).toEqual([nick]);
      // ROOMS reads the room list at most once a second per node: the room shows by then.
      await waitUntil(`rr${round} listed`, async () => (await census(1)).rooms.has(`rr${round}`));
      expect((await census(1)).rooms.get(`rr${round}`)).toBe(1);
      a.close();
      b.close();
      await waitUntil(`${nick} to leave`, async () => !(await census(2)).users.includes(nick));
    }
    await allAlive();
  }, 90_000);

  it('a resume token presented while its owner renames or joins leaves one member', async () => {
    for (let round = 0; round < 8; round++) {
      const nick = `mid${round}`;
      const { c: owner, welcome } = await member(0, nick);
      const thief = await open(1 + (round % 2));
      // The owner's RENAME and JOIN_ROOM are in Redis when the resume arrives.
      owner.sendPy({ cmd: '5', newNickname: `${nick}new` });
      owner.sendPy({ cmd: '100', room: `mr${round}` });
      thief.sendPy({ cmd: '0', nickname: `${nick}t`, caps: CAPS, resume: String(welcome.resume) });
      const w = await thief.expect('03', 10_000);
      // The owner is alive, so its token takes the session whatever it was doing.
      expect(w.resumed).toBe(true);
      await owner.expectClose(10_000);
      const seen = await census(2);
      const mine = seen.users.filter((u) => u.startsWith(nick));
      expect(mine).toHaveLength(1);
      expect([nick, `${nick}new`]).toContain(mine[0]);
      expect(w.nickname).toBe(mine[0]);
      thief.close();
      owner.close();
      await waitUntil(`${nick}'s names to be freed`, async () => {
        const s = await census(0);
        return !s.users.some((u) => u.startsWith(nick)) && !s.rooms.has(`mr${round}`);
      });
    }
    await allAlive();
  }, 120_000);

  it('one token raced over WebSocket and TCP on two nodes, with a nickname storm, leaves one holder', async () => {
    for (let round = 0; round < 4; round++) {
      const nick = `wsr${round}`;
      const { c: owner, welcome } = await member(round % 3, nick);
      const token = String(welcome.resume);
      const web = await wsClient(file.cluster.nodes[(round + 1) % 3]!.httpPort!);
      const tcp = await open((round + 2) % 3);
      const squatters: RawClient[] = [];
      for (let i = 0; i < 3; i++) squatters.push(await open(i));
      web.send({ cmd: '0', nickname: `${nick}w`, caps: CAPS, resume: token });
      tcp.sendPy({ cmd: '0', nickname: `${nick}t`, caps: CAPS, resume: token });
      // Others grab the owner's name while it moves: it must stay held by exactly one.
      for (const q of squatters) q.sendPy({ cmd: '0', nickname: nick, caps: CAPS });
      const [ww, wt] = await Promise.all([web.expect('03', 10_000), tcp.expect('03', 10_000)]);
      expect([ww.resumed, wt.resumed].filter(Boolean)).toHaveLength(1);
      await owner.expectClose(10_000);
      const squatted = await Promise.all(
        squatters.map((q) =>
          q.expect('03', 5_000).then(
            () => true,
            () => false,
          ),
        ),
      );
      expect(squatted.filter(Boolean)).toEqual([]);
      const seen = await census(round % 3);
      expect(seen.users.filter((u) => u === nick)).toEqual([nick]);
      web.ws.close();
      tcp.close();
      for (const q of squatters) q.close();
      await waitUntil(`${nick} to be freed`, async () => {
        const s = await census((round + 1) % 3);
        return !s.users.some((u) => u.startsWith(nick));
      });
    }
  }, 90_000);

  it('a CONNECT storm with one nickname on every node admits exactly one', async () => {
    for (let round = 0; round < 3; round++) {
      const storm: RawClient[] = [];
      for (let i = 0; i < 12; i++) storm.push(await open(i % 3));
      for (const c of storm) c.sendPy({ cmd: '0', nickname: `Storm${round}`, caps: CAPS });
      const got = await Promise.all(
        storm.map((c) =>
          c.expect('03', 10_000).then(
            () => '03',
            () => (c.received[0]?.cmd as string | undefined) ?? 'closed',
          ),
        ),
      );
      expect(got.filter((g) => g === '03')).toHaveLength(1);
      for (const c of storm) c.close();
      await waitUntil('the storm name to be freed', async () => {
        return !(await census(round % 3)).users.includes(`Storm${round}`);
      });
    }
  }, 90_000);

  it('requests cut off before their claim resolves leak no nickname and no place', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            node: fc.integer({ min: 0, max: 2 }),
            steps: fc.array(fc.constantFrom('rename', 'join', 'part', 'chat', 'users'), {
              maxLength: 4,
            }),
            how: fc.constantFrom('destroy' as const, 'end' as const),
            waitMs: fc.constantFrom(0, 0, 1, 3),
          }),
          { minLength: 1, maxLength: 8 },
        ),
        async (ghosts) => {
          const tag = `g${probeCount++}`;
          await Promise.all(
            ghosts.map(async (g, i) => {
              const c = await open(g.node);
              c.sendPy({ cmd: '0', nickname: `${tag}n${i}`, caps: CAPS });
              for (const s of g.steps) {
                if (s === 'rename') c.sendPy({ cmd: '5', newNickname: `${tag}r${i}` });
                if (s === 'join') c.sendPy({ cmd: '100', room: `${tag}room` });
                if (s === 'part') c.sendPy({ cmd: '102', room: `${tag}room` });
                if (s === 'chat') c.sendPy({ cmd: '7', msg: 'x', room: 'lobby', cid: `${i}` });
                if (s === 'users') c.sendPy({ cmd: '1' });
              }
              if (g.waitMs > 0) await new Promise((r) => setTimeout(r, g.waitMs));
              if (g.how === 'destroy') c.close();
              else c.end();
            }),
          );
          await waitUntil(`${tag}'s ghosts to be gone from every node`, async () => {
            for (let n = 0; n < 3; n++) {
              const s = await census(n);
              if (s.users.some((u) => u.startsWith(tag))) return false;
              if (s.rooms.has(`${tag}room`)) return false;
            }
            return true;
          });
        },
      ),
      { numRuns: 8 },
    );
    await allAlive();
  }, 180_000);

  it('joins and parts racing kicks and bans on other nodes leave no member behind', async () => {
    const { c: op } = await member(0, 'opr');
    op.sendPy({ cmd: '92', name: 'teacher', password: 'pw' });
    await op.expect('93');
    for (let round = 0; round < 4; round++) {
      const nick = `vic${round}`;
      const { c: victim } = await member(1 + (round % 2), nick);
      for (let i = 0; i < 5; i++) {
        victim.sendPy({ cmd: '100', room: `kr${round}` });
        victim.sendPy({ cmd: '102', room: `kr${round}` });
      }
      victim.sendPy({ cmd: '100', room: `kr${round}` });
      if (round % 2 === 0) op.sendPy({ cmd: '94', nickname: nick });
      else op.sendPy({ cmd: '95', mask: nick, seconds: 60 });
      await victim.expectClose(10_000);
      await waitUntil(`${nick} to be gone`, async () => {
        const s = await census(round % 3);
        return !s.users.includes(nick) && !s.rooms.has(`kr${round}`);
      });
      if (round % 2 === 1) {
        op.sendPy({ cmd: '96', mask: nick });
        await op.expect('98');
      }
    }
    op.close();
    await allAlive();
  }, 90_000);

  it('a KICK racing a resume of its target on a third node does not report a kick it missed', async () => {
    const { c: op } = await member(0, 'opk');
    op.sendPy({ cmd: '92', name: 'teacher', password: 'pw' });
    await op.expect('93');
    for (let round = 0; round < 6; round++) {
      const nick = `kr${round}x`;
      const { c: owner, welcome } = await member(1, nick);
      const thief = await open(2);
      thief.sendPy({ cmd: '0', nickname: `${nick}t`, caps: CAPS, resume: String(welcome.resume) });
      op.sendPy({ cmd: '94', nickname: nick });
      const w = await thief.expect('03', 10_000);
      await owner.expectClose(10_000);
      // The kick is answered either way, from whichever node it ended on: a "99", or the
      // "no such member" of a kick that found nobody.
      await op.waitFor(
        (m) => (m.cmd === '99' && m.nickname === nick) || (m.cmd === '90' && m.ref === '94'),
        1,
        10_000,
      );
      op.sendPy({ cmd: '6', beginTime: round });
      await op.expect('60');
      // Whichever came first, a "99" kick means the nickname is gone from the cluster.
      await new Promise((r) => setTimeout(r, 300));
      const kicked = op.drain().some((m) => m.cmd === '99' && m.nickname === nick);
      const seen = await census(0);
      if (kicked) expect(seen.users).not.toContain(nick);
      // Else at most the "no such member" of a kick that found nobody where it looked.
      else expect(op.received.filter((m) => !(m.cmd === '90' && m.code === 1011))).toEqual([]);
      if (w.resumed && !kicked) expect(seen.users).toContain(nick);
      thief.close();
      await waitUntil(`${nick} to be freed`, async () => !(await census(1)).users.includes(nick));
    }
    op.close();
  }, 90_000);

  it('a flood from every node reaches every member once, in one order', async () => {
    const room = 'flood';
    const listeners: RawClient[] = [];
    const senders: RawClient[] = [];
    for (let n = 0; n < 3; n++) {
      for (let k = 0; k < 2; k++) {
        const { c } = await member(n, `fl${n}x${k}`, { lobby: false });
        c.sendPy({ cmd: '100', room });
        await c.expect('101');
        (k === 0 ? listeners : senders).push(c);
      }
    }
    const PER = 40;
    // Each sender writes its chats in a few large writes, so turns carry batches.
    await Promise.all(
      senders.map(async (s, si) => {
        for (let burst = 0; burst < 4; burst++) {
          let frames = '';
          for (let j = 0; j < PER / 4; j++) {
            const seq = burst * (PER / 4) + j;
            frames += `${JSON.stringify({ cmd: '7', room, msg: `s${si}m${seq}`, cid: `s${si}c${seq}` })}\n`;
          }
          s.write(frames);
          await new Promise((r) => setTimeout(r, 2));
        }
      }),
    );
    for (const s of senders) {
      for (let j = 0; j < PER; j++) await s.expect('71', 15_000);
    }
    const expected = (senders.length - 1) * PER; // a sender is not sent its own
    const orders: string[][] = [];
    for (const l of [...listeners, ...senders]) {
      const mine = senders.includes(l) ? senders.indexOf(l) : -1;
      const total = mine >= 0 ? expected : senders.length * PER;
      await waitUntil(
        'every chat to arrive',
        () => l.received.filter((m) => m.cmd === '70').length >= total,
      );
      await new Promise((r) => setTimeout(r, 200));
      const chats = l.received.filter((m) => m.cmd === '70' && m.room === room);
      expect(chats).toHaveLength(total);
      expect(l.received.filter((m) => m.cmd === '108')).toEqual([]);
      const ids = chats.map((m) => Number(m.id));
      expect(ids).toEqual([...ids].sort((x, y) => x - y));
      expect(new Set(ids).size).toBe(ids.length);
      for (let si = 0; si < senders.length; si++) {
        const seqs = chats
          .filter((m) => String(m.msg).startsWith(`s${si}m`))
          .map((m) => Number(String(m.msg).slice(`s${si}m`.length)));
        if (si !== mine) expect(seqs).toEqual([...Array(PER).keys()]);
      }
      orders.push(chats.map((m) => `${String(m.id)}:${String(m.msg)}`));
    }
    const full = orders.slice(0, listeners.length);
    for (const o of full) expect(o).toEqual(full[0]);
    for (const c of [...listeners, ...senders]) c.close();
  }, 120_000);

  it('odd room names and cids in batched chats end no process and wedge no session', async () => {
    const { c: watcher } = await member(2, 'oddwatch');
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            room: fc.oneof(
              fc.constant('lobby'),
              fc.string({ maxLength: 40 }),
              fc.integer({ min: 200, max: 5000 }).map((n) => 'r'.repeat(n)),
              fc.jsonValue({ maxDepth: 2 }),
            ),
            cid: fc.oneof(
              fc.string({ minLength: 1, maxLength: 64 }),
              fc.integer({ min: 65, max: 3000 }).map((n) => 'c'.repeat(n)),
              fc.jsonValue({ maxDepth: 2 }),
              fc.constant('\u0000\ud800'),
            ),
          }),
          { minLength: 1, maxLength: 30 },
        ),
        fc.integer({ min: 0, max: 1 }),
        async (chats, node) => {
          const { c } = await member(node, `odd${probeCount++}`);
          let frames = '';
          for (const ch of chats) {
            frames += `${JSON.stringify({ cmd: '7', msg: 'm', room: ch.room, cid: ch.cid })}\n`;
          }
          c.write(frames);
          c.sendPy({ cmd: '6', beginTime: 1 });
          await c.expect('60', 10_000);
          c.close();
        },
      ),
      { numRuns: 15 },
    );
    watcher.sendPy({ cmd: '1' });
    await watcher.expect('10', 10_000);
    await allAlive();
  }, 120_000);

  it('a chat re-sent with the cid of a long one costs Redis about its own bytes', async () => {
    const { c } = await member(0, 'resender', { lobby: false });
    c.sendPy({ cmd: '100', room: 'long' });
    await c.expect('101');
    // Sixteen chats of 4,000 characters in one write: one call, one stream entry.
    const long = '\u0001'.repeat(4000);
    let frames = `${JSON.stringify({ cmd: '7', room: 'long', msg: long, cid: 'k' })}\n`;
    for (let i = 0; i < 15; i++)
      frames += `${JSON.stringify({ cmd: '7', room: 'long', msg: long })}\n`;
    c.write(frames);
    for (let i = 0; i < 16; i++) await c.expect('71', 10_000);
    const admin = new Redis(file.cluster.redis.url, { maxRetriesPerRequest: 1 });
    try {
      const sent = async () =>
        Number((await admin.info('stats')).match(/total_net_output_bytes:(\d+)/)![1]);
      const before = await sent();
      // Forty re-sends of a few bytes each, within the default burst.
      const resend = `${JSON.stringify({ cmd: '7', room: 'long', msg: 'x', cid: 'k' })}\n`;
      c.write(resend.repeat(40));
      for (let i = 0; i < 40; i++) {
        expect(await c.expect('71', 20_000)).toMatchObject({ duplicate: true });
      }
      // Not 40 times the entry (some 16 MB as JSON): a node, its Redis link and Redis's
      // memory swamped by a few connections re-sending at the allowed rate.
      expect((await sent()) - before).toBeLessThan(1_000_000);
    } finally {
      admin.disconnect();
    }
    c.close();
    await allAlive();
  }, 60_000);

  it('HISTORY with odd before and limit over trimmed history answers and goes on', async () => {
    const { c: writer } = await member(0, 'histw', { lobby: false });
    writer.sendPy({ cmd: '100', room: 'trimmed' });
    await writer.expect('101');
    for (let i = 0; i < TRIM * 3; i++) writer.sendPy({ cmd: '7', room: 'trimmed', msg: `h${i}` });
    for (let i = 0; i < TRIM * 3; i++) await writer.expect('71', 15_000);
    const { c: reader } = await member(1, 'histr', { lobby: false });
    reader.sendPy({ cmd: '100', room: 'trimmed' });
    const joined = await reader.expect('101');
    const top = Number(joined.top);
    expect(top).toBe(TRIM * 3);
    const odd = fc.oneof(
      fc.integer({ min: -5, max: TRIM * 4 }),
      fc.constantFrom(0, 1, top - TRIM, top - TRIM + 1, top, top + 1, 2 ** 53, -(2 ** 53), 1.5),
      fc.jsonValue({ maxDepth: 1 }),
    );
    await fc.assert(
      fc.asyncProperty(fc.option(odd), fc.option(odd), async (before, limit) => {
        const req: Record<string, unknown> = { cmd: '106', room: 'trimmed' };
        if (before !== null) req.before = before;
        if (limit !== null) req.limit = limit;
        reader.write(`${JSON.stringify(req)}\n`);
        reader.sendPy({ cmd: '6', beginTime: 2 });
        await reader.expect('60', 10_000);
        const answers = reader.drain().filter((m) => m.cmd === '107' || m.cmd === '90');
        expect(answers).toHaveLength(1);
        const page = answers[0]!;
        if (page.cmd !== '107') return;
        const ids = (page.messages as { id: number }[]).map((m) => m.id);
        // Nothing below the trimmed floor, nothing at or above `before`, oldest first.
        for (const id of ids) expect(id).toBeGreaterThan(top - TRIM);
        if (typeof before === 'number') for (const id of ids) expect(id).toBeLessThan(before);
        expect(ids).toEqual([...ids].sort((x, y) => x - y));
        if (ids.length > 0 && ids[0] === top - TRIM + 1) expect(page.more).toBe(false);
      }),
      { numRuns: 60 },
    );
    writer.close();
    reader.close();
    await allAlive();
  }, 120_000);
});
