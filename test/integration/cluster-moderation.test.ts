/**
 * KICK, BAN, UNBAN and BANS across three confab nodes sharing one real
 * redis-server: an operator on one node removes members of the others, and a
 * ban is kept in Redis and enforced by every node.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/password.js';
import { useCluster } from '../helpers/cluster.js';
import type { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const MOD = { caps: ['errors', 'moderation'] };
const RESUMING = ['errors', 'rooms', 'history'];

const file = useCluster('cluster-mod', 3, [], (dir) => {
  const config = path.join(dir, 'confab.yaml');
  writeFileSync(
    config,
    `max-users: 20\noperators:\n  - name: teacher\n    password: "${hashPassword('open sesame')}"\n`,
  );
  // The third node's bans.json bans "oldban": with --redis it is not used.
  const third = path.join(dir, 'data2');
  mkdirSync(third);
  writeFileSync(
    path.join(third, 'bans.json'),
    JSON.stringify({ bans: [{ mask: 'oldban', by: 'x', reason: '', expires: null }] }),
  );
  return ['--config', config];
});

/** A connection from `localAddress` (any 127.0.0.0/8 address; default 127.0.0.1). */
const open = (node: number, localAddress?: string) => file.open(node, localAddress);

async function member(
  node: number,
  nickname: string,
  extra: object = {},
  from?: string,
): Promise<RawClient> {
  const client = await open(node, from);
  client.sendPy({ cmd: '0', nickname, ...extra });
  await client.expect('03');
  return client;
}

/** An operator on `node`, connected from `from` (OPER attempts are budgeted per address). */
async function operator(node: number, nickname: string, from?: string): Promise<RawClient> {
  const op = await member(node, nickname, MOD, from);
  op.sendPy({ cmd: '92', name: 'teacher', password: 'open sesame' });
  await op.expect('93');
  return op;
}

/** What a CONNECT with `nickname` gets on `node`: "03", "01", a "90" code, or "closed". */
/** tryConnect again (50 times at most) until the answer is `wanted`: the last answer. */
async function connectUntil(
  node: number,
  nickname: string,
  wanted: string,
  extra: object = {},
): Promise<string> {
  let answer = '';
  for (let i = 0; i < 50 && answer !== wanted; i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, 50));
    answer = await tryConnect(node, nickname, extra);
  }
  return answer;
}

async function tryConnect(node: number, nickname: string, extra: object = {}): Promise<string> {
  const client = await open(node);
  client.sendPy({ cmd: '0', nickname, ...extra });
  const deadline = Date.now() + 5_000;
  for (let i = 0; i < 500 && Date.now() < deadline; i++) {
    const first = client.received[0];
    if (first !== undefined) {
      client.close();
      return first.cmd === '90' ? `90 ${String(first.code)}` : first.cmd;
    }
    if (client.isClosed) return 'closed';
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  client.close();
  return 'nothing';
}

describe.skipIf(skip)('moderation across nodes', () => {
  it('KICK removes a member of another node: "99" and "30" everywhere, as on one node', async () => {
    const op = await operator(0, 'op-kick');
    const course = await member(1, 'kickme');
    const plain = await member(2, 'plain-kick');
    const watcher = await member(2, 'watch-kick', { caps: ['moderation'] });
    op.sendPy({ cmd: '94', nickname: 'KICKME', reason: 'spam' });
    await course.expectClose();
    expect(await watcher.expect('30', 10_000)).toEqual({
      cmd: '30',
      nickname: 'kickme',
      userCount: 3,
    });
    expect(watcher.received.filter((m) => m.cmd === '99')).toEqual([
      { cmd: '99', action: 'kick', nickname: 'kickme', by: 'teacher', reason: 'spam' },
    ]);
    expect(await op.expect('99')).toEqual({
      cmd: '99',
      action: 'kick',
      nickname: 'kickme',
      by: 'teacher',
      reason: 'spam',
    });
    expect(await plain.expect('30')).toEqual({ cmd: '30', nickname: 'kickme', userCount: 3 });
    expect(plain.received.filter((m) => m.cmd === '99')).toEqual([]);
    // The nickname is free again, on any node.
    expect(await tryConnect(0, 'kickme')).toBe('03');
    // Nobody of that name anywhere: 1011, as on one node.
    op.sendPy({ cmd: '94', nickname: 'nobody-here' });
    expect(await op.expect('90')).toMatchObject({ code: 1011, ref: '94' });
    for (const c of [op, plain, watcher]) c.close();
  });

  it('the "99" of a KICK answers an operator in none of the target\'s rooms, on another node', async () => {
    const op = await member(0, 'op-away', {
      caps: ['errors', 'moderation', 'rooms'],
      lobby: false,
    });
    op.sendPy({ cmd: '92', name: 'teacher', password: 'open sesame' });
    await op.expect('93');
    op.sendPy({ cmd: '100', room: 'staff' });
    await op.expect('101');
    const target = await member(1, 'kick-away');
    op.sendPy({ cmd: '94', nickname: 'kick-away', reason: 'spam' });
    await target.expectClose();
    expect(await op.expect('99', 10_000)).toEqual({
      cmd: '99',
      action: 'kick',
      nickname: 'kick-away',
      by: 'teacher',
      reason: 'spam',
    });
    op.close();
  });

  it('BAN is stored in Redis: every node removes its matching members and refuses the name', async () => {
    const op = await operator(0, 'op-ban');
    const eve = await member(1, 'eve', { caps: ['errors'] });
    const watcher = await member(2, 'watch-ban', { caps: ['moderation'] });
    op.sendPy({ cmd: '95', mask: 'EVE', reason: 'abuse', seconds: 3600 });
    const list = await op.expect('98');
    expect(list).toMatchObject({ bans: [{ mask: 'EVE', by: 'teacher', reason: 'abuse' }] });
    expect(await eve.expect('90', 10_000)).toMatchObject({ code: 2006 });
    await eve.expectClose();
    expect(await watcher.expect('99', 10_000)).toEqual({
      cmd: '99',
      action: 'ban',
      nickname: 'eve',
      by: 'teacher',
      reason: 'abuse',
      seconds: 3600,
    });
    await watcher.expect('30');
    // Node 2 had the ban before it relayed eve's "99": refused there, and on the others.
    for (const node of [2, 1, 0]) {
      expect(await tryConnect(node, 'Eve')).toBe('01');
      expect(await tryConnect(node, 'eve', { caps: ['errors'] })).toBe('90 2006');
    }
    // RENAME to the banned name, on another node than the operator's.
    const ren = await member(2, 'renamer');
    ren.sendPy({ cmd: '5', newNickname: 'eve' });
    expect(await ren.expect('50')).toMatchObject({ cmd: '50' });

    // BANS on another node lists the shared ban; UNBAN there lifts it everywhere.
    const op2 = await operator(2, 'op-ban2');
    op2.sendPy({ cmd: '97' });
    expect(await op2.expect('98')).toMatchObject({ bans: [{ mask: 'EVE' }] });
    op2.sendPy({ cmd: '96', mask: 'eve' });
    expect(await op2.expect('98')).toEqual({ cmd: '98', bans: [], removed: true });
    // Node 1 hears of it over Redis, a moment after op2 is answered.
    expect(await connectUntil(1, 'eve', '03')).toBe('03');
    for (const c of [op, watcher, ren, op2]) c.close();
  });

  it('a kicked member coming back with its token through another node is told of the kick, once', async () => {
    const op = await operator(0, 'op-told', '127.0.0.21');
    const gone = await open(1);
    gone.sendPy({ cmd: '0', nickname: 'kick-away', caps: RESUMING });
    const { resume: token } = (await gone.expect('03')) as { resume?: string };
    expect(token).toEqual(expect.any(String));
    const watcher = await member(2, 'watch-told', { caps: ['moderation'] });
    op.sendPy({ cmd: '94', nickname: 'kick-away', reason: 'spam' });
    await op.expect('99');
    await watcher.expect('30', 10_000);
    const again = await open(2);
    again.sendPy({ cmd: '0', nickname: 'kick-away', caps: RESUMING, resume: token });
    expect(await again.expect('90', 10_000)).toMatchObject({
      code: 2005,
      message: 'kicked by teacher: spam',
    });
    await again.expectClose();
    expect(again.received.map((m) => m.cmd)).toEqual([]);
    // Told once: the token's next CONNECT, through the node the member was on, is a new
    // session.
    const later = await open(1);
    later.sendPy({ cmd: '0', nickname: 'kick-away', caps: RESUMING, resume: token });
    expect(await later.expect('03', 10_000)).toMatchObject({ resumed: false });
    for (const c of [op, gone, watcher, later]) c.close();
  });

  it('a member banned while its node is paused, resuming on another node, is removed before "03": nothing it sent after CONNECT is taken', async () => {
    const op = await operator(0, 'op-away');
    const away = await open(1);
    away.sendPy({ cmd: '0', nickname: 'away-ban', caps: RESUMING });
    const { resume: token } = (await away.expect('03')) as { resume?: string };
    expect(token).toEqual(expect.any(String));
    const watcher = await member(2, 'watch-away', { caps: ['moderation'] });
    const paused = file.cluster.nodes[1]!.child;
    paused.kill('SIGSTOP');
    let again: RawClient;
    try {
      op.sendPy({ cmd: '95', mask: 'away-ban', reason: 'spam' });
      expect(await op.expect('98')).toMatchObject({ bans: [{ mask: 'away-ban' }] });
      // Node 2 has heard of the ban once it refuses the name (over Redis, a moment after
      // op is answered; before, the name is taken).
      expect(await connectUntil(2, 'away-ban', '90 2006', { caps: ['errors'] })).toBe('90 2006');
      again = await open(2);
      // In one write, as a client that pipelines does: the resume and three chats after it.
      again.write(
        [
          { cmd: '0', nickname: 'away-ban', caps: RESUMING, resume: token },
          ...[1, 2, 3].map((i) => ({ cmd: '7', msg: `still here ${i}` })),
        ]
          .map((m) => JSON.stringify(m))
          .join(''),
      );
      expect(await again.expect('90', 10_000)).toMatchObject({ code: 2006 });
      await again.expectClose();
    } finally {
      paused.kill('SIGCONT');
    }
    // Besides that "90": no "03", no member list or history, no "71" for the chats.
    expect(again.received.map((m) => m.cmd)).toEqual([]);
    expect(await watcher.expect('99', 10_000)).toMatchObject({
      action: 'ban',
      nickname: 'away-ban',
      by: 'teacher',
    });
    await watcher.expect('30');
    // The paused node, running again, finds the member gone: no second removal is told, and
    // none of the chats was delivered.
    await away.expectClose(10_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const told = watcher.received.filter((m) => m.cmd === '99' || m.cmd === '30' || m.cmd === '70');
    expect(told).toEqual([]);
    op.sendPy({ cmd: '96', mask: 'away-ban' });
    await op.expect('98');
    for (const c of [op, watcher]) c.close();
  });

  it('an operator that resumes its session on another node is still one there', async () => {
    const caps = [...RESUMING, 'moderation'];
    // From an address of its own: OPERs from one address are few a second.
    const first = await open(0, '127.0.0.7');
    first.sendPy({ cmd: '0', nickname: 'op-moves', caps });
    const { resume: token } = (await first.expect('03')) as { resume?: string };
    first.sendPy({ cmd: '92', name: 'teacher', password: 'open sesame' });
    await first.expect('93');
    // A plain member resuming elsewhere is no operator there.
    const plain = await open(0);
    plain.sendPy({ cmd: '0', nickname: 'plain-moves', caps });
    const { resume: plainToken } = (await plain.expect('03')) as { resume?: string };
    // Taken over from connections the server still holds, as after a link lost unnoticed.
    const again = await open(1);
    again.sendPy({ cmd: '0', nickname: 'op-moves', caps, resume: token });
    expect(await again.expect('03', 10_000)).toMatchObject({ resumed: true });
    again.sendPy({ cmd: '97' });
    await again.expect('98');
    const other = await open(2);
    other.sendPy({ cmd: '0', nickname: 'plain-moves', caps, resume: plainToken });
    expect(await other.expect('03', 10_000)).toMatchObject({ resumed: true });
    other.sendPy({ cmd: '97' });
    expect(await other.expect('90')).toMatchObject({ code: 1010 });
    for (const c of [first, plain, again, other]) c.close();
  });

  it('an address BAN removes that address on other nodes and refuses it at accept', async () => {
    const op = await operator(0, 'op-addr');
    const far = await member(2, 'from-three', {}, '127.0.0.3');
    const near = await member(2, 'from-one');
    // Node 1 hears of the ban on its own, maybe after node 2: its member from that address
    // (in no room, so that nobody here is shown it leave) is removed once it has, which the
    // refusal at accept below waits for.
    const other = await member(1, 'from-three-too', { caps: ['rooms'], lobby: false }, '127.0.0.3');
    op.sendPy({ cmd: '95', mask: '127.0.0.3' });
    await op.expect('98');
    await far.expectClose(10_000);
    await other.expectClose(10_000);
    expect(await near.expect('30', 10_000)).toEqual({
      cmd: '30',
      nickname: 'from-three',
      userCount: expect.any(Number),
    });
    // Refused at accept on a node other than the operator's: "02", then closed.
    const refused = await open(1, '127.0.0.3');
    expect(await refused.expect('02')).toMatchObject({ cmd: '02' });
    await refused.expectClose();
    op.sendPy({ cmd: '96', mask: '127.0.0.3' });
    await op.expect('98');
    for (const c of [op, near]) c.close();
  });

  it("ignores a node's bans.json with --redis, and says so", async () => {
    expect(await tryConnect(2, 'oldban')).toBe('03');
    expect(file.cluster.nodes[2]!.output()).toMatch(
      /bans\.json in --data-dir is not used with --redis/,
    );
  });
});
