/**
 * Three confab nodes on one real redis-server, for what a cluster must do as
 * one process does when the member it acts on moves or goes meanwhile: a KICK
 * that finds nobody, a BAN racing its target's resume on another node, and a
 * resume token after Redis restarted empty.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/password.js';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import { startCluster, type TestCluster, until } from '../helpers/cluster.js';
import { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history', 'moderation'];

let dir: string;
let cluster: TestCluster;
const clients: RawClient[] = [];
/** Nodes this file stopped with SIGSTOP: continued in afterAll whatever happened. */
const stopped = new Set<number>();

function port(node: number): number {
  return cluster.nodes[node]!.port;
}

/** A connection to `node` from `localAddress` (any 127.0.0.0/8 address). */
async function open(node: number, localAddress = '127.0.0.1'): Promise<RawClient> {
  const client = await RawClient.open(port(node), '127.0.0.1', localAddress);
  clients.push(client);
  return client;
}

async function member(
  node: number,
  nickname: string,
  from?: string,
): Promise<{ c: RawClient; welcome: ParsedServerMessage }> {
  const c = await open(node, from);
  c.sendPy({ cmd: '0', nickname, caps: CAPS });
  const welcome = await c.expect('03', 10_000);
  return { c, welcome };
}

async function operator(node: number, nickname: string): Promise<RawClient> {
  const { c } = await member(node, nickname);
  c.sendPy({ cmd: '92', name: 'teacher', password: 'pw' });
  await c.expect('93');
  return c;
}

/** Waits (bounded) until `done` holds. */
function waitUntil(what: string, done: () => boolean | Promise<boolean>): Promise<void> {
  return until(what, done, 30_000);
}

let probes = 0;

/** The nicknames USERS lists on `node`, asked by a fresh member that then leaves. */
async function users(node: number): Promise<string[]> {
  const { c } = await member(node, `probe${probes++}`);
  c.sendPy({ cmd: '1' });
  const list = (await c.expect('10')).users as [string, string, number][];
  c.close();
  await c.closed;
  return list.map((u) => u[0]).filter((n) => !n.startsWith('probe'));
}

/** Connects `nickname` to `node`, again until Presence is back and lets it in (bounded). */
async function waitForMember(node: number, nickname: string): Promise<RawClient> {
  let joined: RawClient | undefined;
  await waitUntil(`"${nickname}" to join node ${node}`, async () => {
    const c = await open(node);
    c.sendPy({ cmd: '0', nickname, caps: CAPS });
    await c.waitFor((m) => ['03', '01', '02', '90'].includes(m.cmd), 1, 10_000).catch(() => {});
    if (c.received.some((m) => m.cmd === '03')) joined = c;
    else c.close();
    return joined !== undefined;
  });
  return joined!;
}

/** Who a client's view of the lobby holds: its "101", then each "8" adds and each "30" takes away. */
function shown(c: RawClient): Set<string> {
  const view = new Set<string>();
  for (const m of c.received) {
    if (m.cmd === '101') {
      view.clear();
      for (const n of m.members as string[]) view.add(n);
    }
    if (m.cmd === '8') view.add(String(m.nickname));
    if (m.cmd === '30') view.delete(String(m.nickname));
  }
  return view;
}

/** Waits (bounded) for the server to close `c`; says which and what it got if not. */
async function closes(c: RawClient, what: string): Promise<void> {
  await c.expectClose(10_000).catch(() => {
    throw new Error(`${what} was not closed; got ${c.describe()}`);
  });
}

function pause(node: number): void {
  stopped.add(node);
  cluster.nodes[node]!.child.kill('SIGSTOP');
}

function resume(node: number): void {
  cluster.nodes[node]!.child.kill('SIGCONT');
  stopped.delete(node);
}

/** What the first answer to a resume CONNECT was: "03" resumed or not, "01", "90 <code>" or "closed". */
async function tryResume(node: number, token: string, nickname: string, from?: string) {
  const c = await open(node, from);
  c.sendPy({ cmd: '0', nickname, caps: CAPS, resume: token });
  await c.waitFor((m) => ['03', '01', '02', '90'].includes(m.cmd), 1, 10_000).catch(() => {});
  const first = c.received.find((m) => ['03', '01', '02', '90'].includes(m.cmd));
  return { c, first };
}

beforeAll(async () => {
  if (skip) return;
  dir = mkdtempSync(path.join(os.tmpdir(), 'confab-cluster-gaps-'));
  const config = path.join(dir, 'confab.yaml');
  writeFileSync(
    config,
    `max-users: 200\noperators:\n  - name: teacher\n    password: "${hashPassword('pw')}"\n`,
  );
  // Nodes are paused and Redis restarted here: a node must not take that for death.
  cluster = await startCluster(3, [
    '--config',
    config,
    '--cluster-timeout',
    '30',
    '--max-conns-per-ip',
    '0',
  ]);
}, 60_000);

afterAll(async () => {
  for (const node of stopped) cluster.nodes[node]?.child.kill('SIGCONT');
  for (const c of clients) c.close();
  await cluster?.stop();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe.skipIf(skip)('a cluster acting on members that move or go', () => {
  it('a KICK whose target left meanwhile answers the operator 1011, as one process does', async () => {
    const op = await operator(0, 'opk');
    // The kick reaches node 1 only after its target moved to node 2 and left from there.
    const { c: owner, welcome } = await member(1, 'gone1');
    // Redis's MONITOR shows when node 0 has told node 1 (its PUBLISH of the removal).
    const admin = new Redis(cluster.redis.url, { maxRetriesPerRequest: 1 });
    const monitor = await admin.monitor();
    // Lines MONITOR sent before the disconnect below still arrive after it, and ioredis
    // reports each as an error (no command waits for it): not this test's failure.
    monitor.on('error', () => {});
    admin.disconnect();
    const told = new Promise<void>((resolve) => {
      monitor.on('monitor', (_time: string, args: string[]) => {
        const [command, , message] = args;
        if (command?.toLowerCase() === 'publish' && message?.includes('"type":"remove"')) resolve();
      });
    });
    pause(1);
    try {
      op.sendPy({ cmd: '94', nickname: 'gone1', reason: 'late' });
      // Node 0 found the member on node 1 and told it; nothing comes back while node 1 sleeps.
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          told,
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error('node 0 did not tell node 1')), 10_000);
          }),
        ]);
      } finally {
        clearTimeout(timer);
        monitor.disconnect();
      }
      const { c: thief, first } = await tryResume(2, String(welcome.resume), 'gone1t');
      expect(first).toMatchObject({ cmd: '03', resumed: true, nickname: 'gone1' });
      thief.sendPy({ cmd: '3' });
      await thief.expectClose(10_000);
      await waitUntil('gone1 to be freed', async () => !(await users(2)).includes('gone1'));
    } finally {
      resume(1);
    }
    expect(await op.expect('90', 10_000)).toMatchObject({ cmd: '90', code: 1011, ref: '94' });
    await owner.expectClose(10_000);

    // The target closes its connection while the kick is on its way: kicked or "no such
    // member", never neither.
    for (let round = 0; round < 4; round++) {
      const nick = `gone${round}x`;
      const { c } = await member(1, nick);
      pause(1);
      try {
        op.sendPy({ cmd: '94', nickname: nick });
        await new Promise((resolve) => setTimeout(resolve, 200));
        c.close();
        // The close reaches node 1's socket before it wakes.
        await new Promise((resolve) => setTimeout(resolve, 50));
      } finally {
        resume(1);
      }
      const answer = await op.waitFor(
        (m) => (m.cmd === '99' && m.nickname === nick) || (m.cmd === '90' && m.ref === '94'),
        1,
        10_000,
      );
      if (answer.cmd === '90') expect(answer).toMatchObject({ code: 1011 });
      op.drain();
    }
    op.sendPy({ cmd: '94', nickname: 'nobody-at-all' });
    expect(await op.expect('90')).toMatchObject({ code: 1011, ref: '94' });
    op.close();
  }, 120_000);

  it('a BAN racing a resume of its target on another node leaves the target removed everywhere', async () => {
    const op = await operator(0, 'opb');
    const watcher = await open(0);
    watcher.sendPy({ cmd: '0', nickname: 'watchb' });
    await watcher.expect('03');
    const orders = ['ban-first', 'resume-first', 'at-once', 'ban-stored', 'resume-done'] as const;
    for (let round = 0; round < 10; round++) {
      const order = orders[round % orders.length]!;
      const byAddress = round >= orders.length;
      const nick = `rb${round}`;
      const from = `127.0.0.${10 + round}`;
      const { c: owner, welcome } = await member(1, nick, from);
      await watcher.waitFor((m) => m.cmd === '8' && m.nickname === nick, 1, 10_000);
      const mask = byAddress ? from : nick;
      const ban = () => op.sendPy({ cmd: '95', mask, seconds: 600 });
      const thief = await open(round % 2 === 0 ? 2 : 0, from);
      const take = () =>
        thief.sendPy({ cmd: '0', nickname: `${nick}t`, caps: CAPS, resume: welcome.resume });
      const tick = () => new Promise((resolve) => setTimeout(resolve, 2));
      if (order === 'ban-first') {
        ban();
        await tick();
        take();
      } else if (order === 'resume-first') {
        take();
        await tick();
        ban();
      } else if (order === 'at-once') {
        ban();
        take();
      } else if (order === 'ban-stored') {
        ban();
        await op.expect('98');
        take();
      } else {
        take();
        await thief.waitFor((m) => m.cmd === '03' || m.cmd === '90', 1, 10_000).catch(() => {});
        ban();
      }
      const where = `round ${round} (${order}, ${byAddress ? 'address' : 'nickname'})`;
      await closes(owner, `the owner, ${where}`);
      // A resume that came too late connects afresh under its own nickname, which is not
      // banned unless its address is; one that took the member over is removed with it,
      // before its "03" when the ban was known by then (2006 first).
      const answer = await thief
        .waitFor((m) => ['03', '01', '90'].includes(m.cmd), 1, 10_000)
        .catch(() => undefined);
      const tookOver =
        (answer?.cmd === '03' && answer.resumed === true) ||
        (answer?.cmd === '90' && answer.code === 2006);
      if (byAddress || tookOver) {
        await closes(thief, `the thief, ${where}`);
      } else {
        expect(answer).toMatchObject({ cmd: '03', nickname: `${nick}t` });
        thief.close();
      }
      // Nobody of that name on any node, and the watcher last saw it leave.
      for (const node of [0, 1, 2]) {
        await waitUntil(
          `${nick} gone from node ${node}`,
          async () => !(await users(node)).includes(nick),
        );
      }
      await waitUntil(`the watcher to see ${nick} leave`, () => {
        const about = watcher.received.filter(
          (m) => (m.cmd === '8' || m.cmd === '30') && m.nickname === nick,
        );
        return about.at(-1)?.cmd === '30';
      });
      // The last token the member was given takes nothing back, on any node.
      const tokens = [welcome.resume, thief.received.find((m) => m.cmd === '03')?.resume];
      for (const token of tokens.filter((t) => typeof t === 'string')) {
        for (const node of [0, 1, 2]) {
          const { c, first } = await tryResume(node, String(token), `${nick}z${node}`);
          expect(first?.resumed === true).toBe(false);
          c.close();
        }
      }
      op.sendPy({ cmd: '96', mask });
      await waitUntil('the ban to be lifted', () =>
        op.received.some(
          (m) => m.cmd === '98' && !(m.bans as { mask: string }[]).some((b) => b.mask === mask),
        ),
      );
      op.drain();
    }
    for (const c of [op, watcher]) c.close();
  }, 240_000);

  it('a resume token granted before Redis restarted empty works on another node once the cluster is back', async () => {
    const { c: owner, welcome } = await member(0, 'keeper');
    owner.sendPy({ cmd: '100', room: 'kept' });
    await owner.waitFor((m) => m.cmd === '101' && m.room === 'kept', 1, 10_000);
    await cluster.redis.restart();
    // Healthy: every node has heartbeated again (registering its members).
    await waitUntil('the cluster to be whole again', async () => {
      try {
        const response = await fetch(`http://127.0.0.1:${cluster.nodes[1]!.httpPort}/healthz`);
        const body = (await response.json()) as { cluster?: { nodes: number; users: number } };
        return body.cluster?.nodes === 3 && (await users(1)).includes('keeper');
      } catch {
        return false;
      }
    });
    const { c: back, first } = await tryResume(1, String(welcome.resume), 'keeper2');
    expect(first).toMatchObject({ cmd: '03', resumed: true, nickname: 'keeper' });
    await owner.expectClose(10_000);
    await back.waitFor((m) => m.cmd === '101' && m.room === 'kept', 1, 10_000);
    // The token it was given now works in turn, on a third node.
    const { c: again, first: second } = await tryResume(2, String(first?.resume), 'keeper3');
    expect(second).toMatchObject({ cmd: '03', resumed: true, nickname: 'keeper' });
    await back.expectClose(10_000);
    again.close();
  }, 120_000);

  it('a nickname taken while Redis was empty stays with its new holder; the earlier one is closed and its rooms told', async () => {
    const { c: earlier } = await member(0, 'twin');
    const { c: watcher } = await member(2, 'twinwatch');
    // Answered in order: once USERS is, nothing of the CONNECTs waits for Redis (a reply
    // lost in the restart would fail its request, which is another test).
    for (const c of [earlier, watcher]) {
      c.sendPy({ cmd: '1' });
      await c.expect('10', 10_000);
    }
    // Node 0 cannot register its members again until it is continued: meanwhile Redis holds
    // no claim on "twin", and a client of node 1 takes the name.
    pause(0);
    let later: RawClient;
    try {
      await cluster.redis.restart();
      later = await waitForMember(1, 'twin');
    } finally {
      resume(0);
    }
    await closes(earlier, 'the earlier "twin"');
    expect(earlier.received).toContainEqual(expect.objectContaining({ cmd: '90', code: 3006 }));
    for (const node of [0, 1, 2]) {
      await waitUntil(`node ${node} to list one "twin"`, async () => {
        const listed = await users(node).catch(() => []);
        return listed.filter((n) => n === 'twin').length === 1;
      });
    }
    // Past the read of the lobby's members its node makes after the resync (three heartbeats),
    // and then until the view comes right (bounded): that read may come later on a loaded
    // machine.
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    await until(
      "the watcher's view to hold twin and itself",
      () => [...shown(watcher)].sort().join() === 'twin,twinwatch',
      10_000,
    ).catch(() => {});
    // The watcher's view of the lobby holds "twin" and itself, as USERS says: a member is
    // never told that it left.
    expect([...shown(watcher)].sort()).toEqual(['twin', 'twinwatch']);
    expect(watcher.received).not.toContainEqual(
      expect.objectContaining({ cmd: '30', nickname: 'twinwatch' }),
    );
    later.sendPy({ cmd: '7', msg: 'the twin that stayed' });
    await watcher.waitFor((m) => m.cmd === '70' && m.msg === 'the twin that stayed', 1, 10_000);
    later.close();
  }, 120_000);

  it('a request whose reply a Redis restart lost fails instead of wedging its node', async () => {
    for (let round = 0; round < 2; round++) {
      const { c } = await member(0, `inflight${round}`);
      c.sendPy({ cmd: '100', room: `flight${round}` });
      // At once: the JOIN_ROOM's script is written, its reply not read.
      await cluster.redis.restart();
      // Answered either way: in the room, or told to come back (3005).
      await c.waitFor(
        (m) => (m.cmd === '101' && m.room === `flight${round}`) || m.cmd === '90',
        1,
        20_000,
      );
      // Node 0 heartbeats again: it registers new members, and the others count it.
      await waitUntil('node 0 to be back in the cluster', async () => {
        try {
          const answer = await tryResume(0, 'no-such-token', `back${round}`);
          answer.c.close();
          if (answer.first?.cmd !== '03') return false;
          const response = await fetch(`http://127.0.0.1:${cluster.nodes[1]!.httpPort}/healthz`);
          const body = (await response.json()) as { cluster?: { nodes: number } };
          return body.cluster?.nodes === 3;
        } catch {
          return false;
        }
      });
      c.close();
    }
  }, 120_000);
});
