/**
 * Actions, IRC's /me: CHAT with "action": true from a client with the "actions" capability.
 * Clients with it are told the chat is one; every other client, the course's first, gets its
 * text between asterisks, live and from history, on one process and across a cluster.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatClient, type ChatMessage } from '../../src/client/chat-client.js';
import type { ConfabServer } from '../../src/server.js';
import { ChatProcess } from '../helpers/chat-process.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { join, type RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';
import { startConfab } from '../helpers/servers.js';

const EXT = ['errors', 'rooms', 'history'];
const ACTS = [...EXT, 'actions'];

/** Three listeners and a speaker: `course` (no caps), `ext` (no "actions"), `acts` and `actor`. */
async function members(ports: readonly number[]) {
  const at = (i: number) => ports[i % ports.length]!;
  const course = await join(at(0), 'course');
  const ext = await join(at(1), 'ext', { caps: EXT });
  const acts = await join(at(0), 'acts', { caps: ACTS });
  const actor = await join(at(1), 'actor', { caps: ACTS });
  return { course, ext, acts, actor, all: [course, ext, acts, actor] };
}

async function saysAnAction(m: Awaited<ReturnType<typeof members>>): Promise<void> {
  m.actor.sendPy({ cmd: '7', msg: 'waves', action: true, room: 'lobby', cid: 'a1' });
  expect(await m.actor.expect('71', 10_000)).toMatchObject({ cid: 'a1' });
  expect(await m.course.expect('70', 10_000)).toEqual({ cmd: '70', from: 'actor', msg: '*waves*' });
  const ext = await m.ext.expect('70', 10_000);
  expect(ext).toMatchObject({ from: 'actor', msg: '*waves*', room: 'lobby' });
  expect(ext).not.toHaveProperty('action');
  expect(await m.acts.expect('70', 10_000)).toMatchObject({
    from: 'actor',
    msg: 'waves',
    room: 'lobby',
    action: true,
  });
  // History tells it each client's way too.
  for (const [client, msg, action] of [
    [m.acts, 'waves', true],
    [m.ext, '*waves*', undefined],
  ] as const) {
    client.sendPy({ cmd: '106', room: 'lobby', limit: 10 });
    const page = await client.expect('107', 10_000);
    const said = (page.messages as { msg: string; action?: true }[]).at(-1);
    expect(said).toEqual(expect.objectContaining({ msg }));
    expect(said?.action).toBe(action);
  }
}

describe('actions on one process', () => {
  let server: ConfabServer;
  beforeAll(async () => {
    server = await startConfab();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('go to clients with "actions" as such, and to every other between asterisks', async () => {
    const m = await members([server.address.port]);
    try {
      await saysAnAction(m);
      // Not a boolean: refused, from a client with "actions".
      m.actor.sendPy({ cmd: '7', msg: 'waves', action: 'yes' });
      expect(await m.actor.expect('90')).toMatchObject({ code: 1002, ref: '7' });
      // Nor is an action of nothing ("**" to a course client).
      for (const nothing of [' \t', '\u200b', '\u2800', '\u0000', '\u3164\u0301']) {
        m.actor.sendPy({ cmd: '7', msg: nothing, action: true });
        expect(await m.actor.expect('90')).toMatchObject({ code: 1002, ref: '7' });
      }
      // From a client without "actions" the field is an extra one, as any unknown field.
      m.ext.sendPy({ cmd: '7', msg: 'not an action', action: true });
      const plain = await m.acts.expect('70');
      expect(plain).toMatchObject({ from: 'ext', msg: 'not an action' });
      expect(plain).not.toHaveProperty('action');
      expect(await m.course.expect('70')).toEqual({
        cmd: '70',
        from: 'ext',
        msg: 'not an action',
      });
    } finally {
      for (const c of m.all) c.close();
    }
  });

  it('the terminal client sends /me and shows actions as "* nickname text"', async () => {
    const port = server.address.port;
    const bob = await ChatClient.connect({ port, nickname: 'bob', actions: true });
    // A program that did not ask for actions gets their text between asterisks.
    const plain = await ChatClient.connect({ port, nickname: 'plain' });
    const plainHeard: ChatMessage[] = [];
    plain.on('chat', (m) => plainHeard.push(m));
    const heard: ChatMessage[] = [];
    bob.on('chat', (m) => heard.push(m));
    const ann = ChatProcess.start(['ann', '--port', String(port)]);
    try {
      await ann.waitFor('You are the');
      ann.type('/me waves');
      await ann.waitFor(/\d\d:\d\d \* ann waves/);
      bob.chat('nods', undefined, true);
      await ann.waitFor(/\d\d:\d\d \* bob nods/);
      ann.type('\\exit');
      expect(await ann.exited).toBe(0);
      expect(heard.find((m) => m.from === 'ann')).toMatchObject({ msg: 'waves', action: true });
      expect(plainHeard.find((m) => m.from === 'ann')).toEqual(
        expect.objectContaining({ msg: '*waves*' }),
      );
      expect(plainHeard.find((m) => m.from === 'ann')?.action).toBeUndefined();
    } finally {
      await ann.stop();
      await bob.exit();
      await plain.exit();
    }
  });
});

describe.skipIf(withoutRedis())('actions across a cluster', () => {
  let cluster: TestCluster;
  const clients: RawClient[] = [];
  beforeAll(async () => {
    cluster = await startCluster(2);
  }, 60_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    await cluster?.stop();
  }, 60_000);

  it('reach every node, and its history, as they do one process', async () => {
    const m = await members(cluster.nodes.map((n) => n.port));
    clients.push(...m.all);
    await saysAnAction(m);
  });
});
