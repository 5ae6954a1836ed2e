import { describe, expect, it } from 'vitest';
import { until, useCluster } from '../helpers/cluster.js';
import type { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';
import { wsClient } from '../helpers/ws-client.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history', 'renames'];

const file = useCluster('cluster-origins', 2, ['--max-conns-per-ip', '0', '--max-users', '200']);
const open = (node: number) => file.open(node);

async function member(
  node: number,
  nickname: string,
  extra: object = {},
): Promise<{ c: RawClient; token: string }> {
  const c = await open(node);
  c.sendPy({ cmd: '0', nickname, caps: CAPS, ...extra });
  const welcome = await c.expect('03', 10_000);
  // Chats sent after its "101" are live to it, not history.
  await c.waitFor((m) => m.cmd === '101' && m.room === 'lobby');
  return { c, token: welcome.resume as string };
}

/**
 * Chats ("70") with `msg` that `c` was shown live: not the history after a "101" (ids up
 * to its `top`), which holds a member's own chats too.
 */
function shown(c: RawClient | readonly Record<string, unknown>[], msg: string): unknown[] {
  const received = Array.isArray(c) ? c : (c as RawClient).received;
  const tops = new Map<string, number>();
  const live: unknown[] = [];
  for (const m of received as readonly Record<string, unknown>[]) {
    if (m.cmd === '101') tops.set(m.room as string, m.top as number);
    if (m.cmd !== '70' || m.msg !== msg) continue;
    const top = typeof m.room === 'string' ? tops.get(m.room) : undefined;
    if (top === undefined || typeof m.id !== 'number' || m.id > top) live.push(m);
  }
  return live;
}

/** Waits until `observer` was shown every one of `msgs`, then a little longer. */
async function settle(observer: RawClient, msgs: readonly string[]): Promise<void> {
  for (const msg of msgs) await observer.waitFor((m) => m.cmd === '70' && m.msg === msg);
  await new Promise((resolve) => setTimeout(resolve, 300));
}

/**
 * Two connections of `node` present `token` at once, as `<prefix>x0` and `<prefix>x1`:
 * both, their "03"s, and the index of the one that says it resumed (-1: none).
 */
async function race(node: number, token: string, prefix: string) {
  const racers = [await open(node), await open(node)];
  racers.forEach((c, i) => {
    c.sendPy({ cmd: '0', nickname: `${prefix}x${i}`, caps: CAPS, resume: token });
  });
  const welcomes = await Promise.all(racers.map((c) => c.expect('03', 10_000)));
  return { racers, welcomes, w: welcomes.findIndex((m) => m.resumed === true) };
}

function noOrigin(frames: readonly string[]): void {
  for (const frame of frames) expect(frame).not.toContain('origin');
}

describe.skipIf(skip)("a cluster's chats carry their sender's origin", () => {
  it('the loser of a race for one token on the node holding it is not taken for its session', async () => {
    const problems: object[] = [];
    for (let round = 0; round < 6; round++) {
      const owner = await member(0, `own${round}`);
      const watch = await member(1, `watch${round}`);
      // Two connections of node 0 present the owner's token at once: one takes the
      // session over, the other is an ordinary CONNECT under its own name.
      const { racers, welcomes, w } = await race(0, owner.token, `racer${round}`);
      expect(w).toBeGreaterThanOrEqual(0);
      expect(welcomes.filter((m) => m.resumed === true)).toHaveLength(1);
      const winner = racers[w]!;
      const loser = racers[1 - w]!;
      await owner.c.expectClose(10_000);
      await Promise.all(racers.map((c) => c.waitFor((m) => m.cmd === '101' && m.room === 'lobby')));
      const fromWinner = `winner says ${round}`;
      const fromLoser = `loser says ${round}`;
      winner.sendPy({ cmd: '7', msg: fromWinner });
      loser.sendPy({ cmd: '7', msg: fromLoser });
      await settle(watch.c, [fromWinner, fromLoser]);
      // A chat sent after both were stored reaches each racer after them (a room's chats
      // come in id order): once it has, each was shown whatever it would be of the two.
      const after = `after both ${round}`;
      watch.c.sendPy({ cmd: '7', msg: after });
      for (const c of racers) await c.waitFor((m) => m.cmd === '70' && m.msg === after);
      const seen = {
        winnerOwn: shown(winner, fromWinner).length,
        winnerOther: shown(winner, fromLoser).length,
        loserOwn: shown(loser, fromLoser).length,
        loserOther: shown(loser, fromWinner).length,
      };
      const want = { winnerOwn: 0, winnerOther: 1, loserOwn: 0, loserOther: 1 };
      if (JSON.stringify(seen) !== JSON.stringify(want)) problems.push({ round, seen });
      for (const c of [winner, loser, watch.c]) c.close();
    }
    expect(problems).toEqual([]);
  }, 60_000);

  it('a chat sent as its session is taken over on the same node is not shown to its sender', async () => {
    const problems: object[] = [];
    for (let round = 0; round < 6; round++) {
      const old = await member(0, `moving${round}`);
      const next = await open(0);
      // The chat and the resume leave in the same turn: the chat's copy comes back while
      // the takeover waits for Presence, its sender still open.
      old.c.sendPy({ cmd: '7', msg: `in flight ${round}` });
      next.sendPy({ cmd: '0', nickname: `mover${round}`, caps: CAPS, resume: old.token });
      await next.expect('03', 10_000);
      await old.c.expectClose(10_000);
      const own =
        shown(old.c, `in flight ${round}`).length + shown(next, `in flight ${round}`).length;
      if (own !== 0) problems.push({ round, own });
      next.close();
    }
    expect(problems).toEqual([]);
  }, 60_000);

  it('the winner of a race on another node for one token keeps the session its identity', async () => {
    const problems: object[] = [];
    for (let round = 0; round < 6; round++) {
      const owner = await member(0, `far${round}`);
      owner.c.sendPy({ cmd: '7', msg: `kept ${round}`, cid: `k${round}` });
      await owner.c.expect('71', 10_000);
      const { racers, w } = await race(1, owner.token, `near${round}`);
      expect(w).toBeGreaterThanOrEqual(0);
      const winner = racers[w]!;
      await winner.waitFor((m) => m.cmd === '101' && m.room === 'lobby');
      // The winner re-sends the chat its session sent: a duplicate, as after any resume.
      winner.sendPy({ cmd: '7', msg: `kept ${round}`, cid: `k${round}` });
      const stored = await winner.expect('71', 10_000);
      if (stored.duplicate !== true) problems.push({ round, winner: w, stored });
      for (const c of racers) c.close();
      owner.c.close();
    }
    expect(problems).toEqual([]);
  }, 60_000);

  it('own chats stay out and others come in across renames, resumes and a freed nickname', async () => {
    const ann = await member(0, 'ann');
    const obs0 = await member(0, 'obs0');
    const obs1 = await member(1, 'obs1');
    const course = await open(1);
    course.sendPy({ cmd: '0', nickname: 'course' });
    await course.expect('03');
    const web = await wsClient(file.cluster.nodes[1]!.httpPort!);
    web.send({ cmd: '0', nickname: 'webby', caps: CAPS });
    await web.expect('03');

    // ann chats and renames at once, then takes a freed name's chats: 'ann' goes to bea.
    ann.c.sendPy({ cmd: '7', msg: 'a1' });
    ann.c.sendPy({ cmd: '5', newNickname: 'anna' });
    await ann.c.expect('51');
    const bea = await member(1, 'ann');
    ann.c.sendPy({ cmd: '7', msg: 'a2' });
    bea.c.sendPy({ cmd: '7', msg: 'b1' });
    await settle(obs1.c, ['a1', 'a2', 'b1']);
    await settle(ann.c, ['b1']);
    await settle(bea.c, ['a2']);
    expect(shown(ann.c, 'a1')).toEqual([]);
    expect(shown(ann.c, 'a2')).toEqual([]);
    expect(shown(bea.c, 'b1')).toEqual([]);

    // ann resumes on the other node, having sent a chat just before (in flight).
    ann.c.sendPy({ cmd: '7', msg: 'a3' });
    const ann2 = await member(1, 'whatever', { resume: ann.token });
    ann2.c.sendPy({ cmd: '7', msg: 'a4' });
    bea.c.sendPy({ cmd: '7', msg: 'b2' });
    await settle(obs0.c, ['a3', 'a4', 'b2']);
    await settle(ann2.c, ['b2']);
    expect(shown(ann2.c, 'a3')).toEqual([]);
    expect(shown(ann2.c, 'a4')).toEqual([]);

    // ann resumes back on node 0 and renames; then a spent token and a forged one.
    const ann3 = await member(0, 'x', { resume: ann2.token });
    ann3.c.sendPy({ cmd: '5', newNickname: 'annie' });
    await ann3.c.expect('51');
    const spent = await member(1, 'thief', { resume: ann.token });
    const forged = await member(0, 'forger', {
      resume: `${ann2.token.slice(0, 12)}${'A'.repeat(24)}`,
    });
    ann3.c.sendPy({ cmd: '7', msg: 'a5' });
    spent.c.sendPy({ cmd: '7', msg: 't1' });
    forged.c.sendPy({ cmd: '7', msg: 'f1' });
    course.sendPy({ cmd: '7', msg: 'c1' });
    web.send({ cmd: '7', msg: 'w1' });
    await settle(obs1.c, ['a5', 't1', 'f1', 'c1', 'w1']);
    await settle(ann3.c, ['t1', 'f1', 'c1', 'w1']);
    // Each of these is shown the others' chats on its own node's time: waited for too.
    await settle(forged.c, ['a5']);
    await settle(spent.c, ['a5', 'f1', 'c1', 'w1']);
    // A chat sent after all five were stored reaches each sender after them (a room's chats
    // come in id order): once it has, a sender's own would have come.
    obs0.c.sendPy({ cmd: '7', msg: 'after all five' });
    for (const c of [ann3.c, forged.c, course, spent.c]) {
      await c.waitFor((m) => m.cmd === '70' && m.msg === 'after all five');
    }
    await until(
      'the web client to be shown the chat after all five',
      () => web.received.some((m) => m.cmd === '70' && m.msg === 'after all five'),
      20_000,
    );
    expect(shown(ann3.c, 'a5')).toEqual([]);
    expect(shown(forged.c, 'f1')).toEqual([]);
    expect(shown(forged.c, 'a5')).toHaveLength(1);
    expect(shown(course, 'c1')).toEqual([]);
    expect(shown(web.received, 'w1')).toEqual([]);
    // The spent token names nobody while ann goes on on the other node: the thief is
    // shown her chats and everyone else's, and she its.
    expect(shown(spent.c, 't1')).toEqual([]);
    for (const msg of ['a5', 'f1', 'c1', 'w1']) expect(shown(spent.c, msg)).toHaveLength(1);
    expect(shown(ann3.c, 't1')).toHaveLength(1);

    // History: "101" of a room joined, HISTORY pages, a resume's recovery.
    ann3.c.sendPy({ cmd: '100', room: 'lobby' });
    for (const c of [ann3.c, obs1.c]) {
      c.sendPy({ cmd: '106', room: 'lobby', limit: 100 });
      await c.expect('107', 10_000);
    }
    const late = await member(1, 'late');
    // A resume that recovers from a position (the replay after "101"), on the other node.
    const epoch = late.c.received.find((m) => m.cmd === '101')!.epoch as string;
    const ann4 = await member(1, 'y', {
      resume: ann3.token,
      since: [{ room: 'lobby', epoch, id: 1 }],
    });
    const recovered = ann4.c.received.find((m) => m.cmd === '101')!;
    expect(recovered.recovered).toBe(true);
    await ann4.c.waitFor((m) => m.cmd === '70' && m.msg === 'w1');
    web.send({ cmd: '106', room: 'lobby', limit: 100 });
    const page = await web.expect('107', 10_000);
    expect((page.messages as unknown[]).length).toBeGreaterThan(5);
    noOrigin([JSON.stringify(page)]);
    noOrigin(ann4.c.rawFrames);
    await new Promise((resolve) => setTimeout(resolve, 500));
    for (const c of [ann.c, ann2.c, ann3.c, bea.c, obs0.c, obs1.c, course, spent.c, forged.c]) {
      noOrigin(c.rawFrames);
    }
    noOrigin(late.c.rawFrames);
    noOrigin(web.received.map((m) => JSON.stringify(m)));
    web.ws.close();
  }, 90_000);
});
