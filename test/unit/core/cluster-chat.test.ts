/**
 * Chat as a node of a cluster, with the in-process Presence and Broker on
 * shared hubs standing for Redis: several Chats in one process are several
 * nodes. What clients see must be what one process shows them.
 */
import { describe, expect, it, vi } from 'vitest';
import { parseMask } from '../../../src/core/bans.js';
import type { BrokerHandler, NodeNotice, RoomEvent } from '../../../src/core/broker.js';
import { Chat, type ChatOptions } from '../../../src/core/chat.js';
import type { Identities } from '../../../src/core/identities.js';
import { MemoryPresence, PresenceHub } from '../../../src/core/memory-presence.js';
import {
  type Heartbeat,
  PresenceKeeper,
  ReleaseRetried,
  type RoomLeft,
} from '../../../src/core/presence.js';
import { roomKey } from '../../../src/core/rooms.js';
import { ErrorCode } from '../../../src/protocol/codes.js';
import type { Request } from '../../../src/protocol/messages.js';
import { senderOrigin } from '../../../src/store/common.js';
import { MemoryBroker, MemoryBrokerHub } from '../../../src/store/memory-broker.js';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';
import {
  joinChat as connect,
  connectWith,
  type FakePeer,
  sendRequest as send,
} from '../../helpers/fake-peer.js';
import { EXT, echoingNode, restartableNode, settle } from '../../helpers/quiet-node.js';

function nodes(n: number, options: ChatOptions = {}): Chat[] {
  const presenceHub = new PresenceHub();
  const brokerHub = new MemoryBrokerHub();
  const history = new MemoryHistoryStore({ retention: { maxMessages: 1000, maxAgeMs: 0 } });
  return Array.from({ length: n }, (_, i) => {
    const node = `node${i}`;
    return new Chat({
      maxUsers: 3,
      ...options,
      history,
      cluster: {
        presence: new MemoryPresence({ hub: presenceHub, node }),
        broker: new MemoryBroker({ hub: brokerHub, node }),
        originOf: senderOrigin,
      },
    });
  });
}

/** Two nodes of one cluster (with `options`), ann on node a and bob on node b (with `caps`). */
async function annAndBob(
  caps?: string[],
  options: ChatOptions = {},
): Promise<{ a: Chat; b: Chat; ann: FakePeer; bob: FakePeer }> {
  const [a, b] = nodes(2, options);
  const ann = connect(a!, 'ann', caps);
  const bob = connect(b!, 'bob', caps);
  await settle();
  return { a: a!, b: b!, ann, bob };
}

const RESUMING = ['errors', 'rooms', 'renames', 'history'];

/** `call` stands for `real`, each call held until `release()` lets them all go on in order. */
function holding<A extends unknown[], R>(real: (...args: A) => Promise<R>) {
  const held: (() => void)[] = [];
  return {
    held,
    call: (...args: A) =>
      new Promise<R>((resolve, reject) => {
        held.push(() => real(...args).then(resolve, reject));
      }),
    release: () => {
      for (const go of held.splice(0)) go();
    },
  };
}

/** What a node holds of its sessions' tokens and identities, which must not leak. */
function identities(chat: Chat | undefined): Identities {
  return (chat as unknown as { identities: Identities }).identities;
}

/** The resume token in the "03" among what `peer` was sent. */
function tokenOf(peer: FakePeer): string {
  return (peer.take().find((m) => m.cmd === '03') as { resume: string }).resume;
}

/**
 * Resumes `token` on `node`, `late`'s held events handed over while the takeover is under
 * way (before Presence grants it): what the new connection was sent.
 */
async function resumeReleasing(
  node: Chat,
  token: string,
  late: { release(): number },
): Promise<ReturnType<FakePeer['take']>> {
  const presence = node.cluster!.presence;
  const takeOver = presence.takeOver.bind(presence);
  presence.takeOver = (...args) => {
    late.release();
    return takeOver(...args);
  };
  const back = connectWith(node, { cmd: '0', nickname: 'x', caps: RESUMING, resume: token });
  await settle();
  return back.take();
}

/** Two nodes (interruptibleNodes), sam on node a and wit on node b with history; sam's token. */
async function samOnAWitOnB() {
  const nodes = interruptibleNodes();
  const sam = connect(nodes.a, 'sam', RESUMING);
  const wit = connect(nodes.b, 'wit', RESUMING);
  await settle();
  return { ...nodes, sam, wit, token: tokenOf(sam) };
}

/** ann, with history, on a node of its own cluster, and her resume token. */
async function annOnOneNode(): Promise<{ a: Chat; caps: string[]; ann: FakePeer; token: string }> {
  const [a] = nodes(1, { maxUsers: 10 });
  const ann = connect(a!, 'ann', RESUMING);
  await settle();
  return { a: a!, caps: RESUMING, ann, token: tokenOf(ann) };
}

/** Two nodes whose brokers a test can interrupt and reconnect (a lost subscription). */
function interruptibleNodes(resyncDelayMs?: number): {
  brokers: MemoryBroker[];
  a: Chat;
  b: Chat;
  /** What each node's Chat handed its broker to be told events by. */
  handlers: BrokerHandler[];
  presences: MemoryPresence[];
} {
  const hub = new MemoryBrokerHub();
  const presenceHub = new PresenceHub();
  const history = new MemoryHistoryStore({ retention: { maxMessages: 10, maxAgeMs: 0 } });
  const brokers = ['n0', 'n1'].map((node) => new MemoryBroker({ hub, node }));
  const handlers: BrokerHandler[] = [];
  for (const [i, broker] of brokers.entries()) {
    const onEvent = broker.onEvent.bind(broker);
    broker.onEvent = (handler) => {
      handlers[i] = handler;
      onEvent(handler);
    };
  }
  const presences = brokers.map((_, i) => new MemoryPresence({ hub: presenceHub, node: `n${i}` }));
  const [a, b] = brokers.map(
    (broker, i) =>
      new Chat({
        history,
        cluster: {
          presence: presences[i]!,
          broker,
          originOf: senderOrigin,
          resyncDelayMs,
        },
      }),
  );
  return { brokers, a: a!, b: b!, handlers, presences };
}

/**
 * Holds back the room events of `type` that `handler` is handed, as a PUBLISH that arrives
 * after one sent later; `release()` hands them over in order and says how many there were.
 */
function holdBack(handler: BrokerHandler, type: RoomEvent['type']): { release(): number } {
  const held: [string, RoomEvent][] = [];
  const room = handler.room.bind(handler);
  handler.room = (key, event) => {
    if (event.type === type) held.push([key, event]);
    else room(key, event);
  };
  return {
    release() {
      for (const [key, event] of held) room(key, event);
      return held.length;
    },
  };
}

/** With node a's subscription down (`broker`), `sam` says "hello", then becomes "samuel". */
async function helloThenRename(broker: MemoryBroker, sam: FakePeer): Promise<void> {
  broker.interrupt();
  send(sam, { cmd: '7', msg: 'hello' });
  await settle();
  send(sam, { cmd: '5', newNickname: 'samuel' });
  await settle();
}

/**
 * wit on node a, sam on node b. Node a's subscription is down: b's chat reaches it only
 * later. sam says "hello" and becomes "samuel", and wit takes the name it freed.
 */
async function nameTakenWhileTravelling(): Promise<{ brokers: MemoryBroker[]; wit: FakePeer }> {
  const { brokers, a, b } = interruptibleNodes();
  const wit = connect(a, 'wit', EXT);
  const sam = connect(b, 'sam', EXT);
  await settle();
  await helloThenRename(brokers[0]!, sam);
  send(wit, { cmd: '5', newNickname: 'sam' });
  await settle();
  return { brokers, wit };
}

describe('a chat of several nodes', () => {
  it('shows a course client on one node what one process would', async () => {
    const [a, b] = nodes(2);
    const ann = connect(a!, 'ann');
    await settle();
    const bob = connect(b!, 'bob');
    await settle();
    expect(ann.take()).toEqual([
      { cmd: '03', serverAddress: ['127.0.0.1', 20825], userCount: 1 },
      { cmd: '8', nickname: 'bob', userCount: 2 },
    ]);
    expect(bob.take()).toEqual([{ cmd: '03', serverAddress: ['127.0.0.1', 20825], userCount: 2 }]);
    send(bob, { cmd: '7', msg: 'hello' });
    send(ann, { cmd: '7', msg: 'hi' });
    await settle();
    expect(ann.take()).toEqual([{ cmd: '70', from: 'bob', msg: 'hello' }]);
    expect(bob.take()).toEqual([{ cmd: '70', from: 'ann', msg: 'hi' }]);
    send(ann, { cmd: '1' });
    await settle();
    expect(ann.take()).toEqual([
      {
        cmd: '10',
        users: [
          ['ann', '127.0.0.1', ann.remote.port],
          ['bob', '127.0.0.1', bob.remote.port],
        ],
      },
    ]);
    send(ann, { cmd: '2', to: 'BOB', msg: 'psst' });
    await settle();
    expect(ann.take()).toEqual([{ cmd: '22' }]);
    expect(bob.take()).toEqual([{ cmd: '70', from: 'ann', msg: 'psst' }]);
    send(bob, { cmd: '3' });
    await settle();
    expect(ann.take()).toEqual([{ cmd: '30', nickname: 'bob', userCount: 1 }]);
  });

  describe('a whisper answered "22" reaches the member it was meant for', () => {
    /**
     * Three nodes, ann on a, bob on b (with a resume token), and a's whispers held after
     * Presence said where bob is, until `release`: the receiver moves or renames meanwhile.
     */
    async function heldWhisper() {
      const [a, b, c] = nodes(3, { maxUsers: 10 });
      const ann = connect(a!, 'ann', EXT);
      const bob = connect(b!, 'bob', RESUMING);
      await settle();
      const token = tokenOf(bob);
      ann.take();
      const broker = a!.cluster!.broker;
      const whispers = holding(broker.whisper.bind(broker));
      broker.whisper = whispers.call;
      send(ann, { cmd: '2', to: 'bob', msg: 'psst' });
      await settle();
      expect(whispers.held).toHaveLength(1);
      const release = async () => {
        whispers.release();
        await settle();
      };
      return { a: a!, b: b!, c: c!, ann, bob, token, release };
    }

    it('to the node a resume moved it to', async () => {
      const { c, ann, bob, token, release } = await heldWhisper();
      const back = connectWith(c, { cmd: '0', nickname: 'x', caps: RESUMING, resume: token });
      await settle();
      expect(back.take()).toContainEqual(expect.objectContaining({ cmd: '03', resumed: true }));
      expect(bob.closedWith).toBe('replaced');
      bob.take();
      await release();
      expect(ann.take()).toEqual([{ cmd: '22' }]);
      expect(back.take()).toEqual([{ cmd: '70', from: 'ann', msg: 'psst' }]);
      expect(bob.take()).toEqual([]);
    });

    it('not before the "03" of the resume under way that took it over', async () => {
      const { c, ann, token, release } = await heldWhisper();
      // The resume on node c waits for the lobby's count after Presence moved the member.
      const presence = c.cluster!.presence;
      const counts = holding(presence.count.bind(presence));
      presence.count = counts.call;
      const back = connectWith(c, { cmd: '0', nickname: 'x', caps: RESUMING, resume: token });
      await settle();
      expect(counts.held.length).toBeGreaterThan(0);
      await release();
      expect(ann.take()).toEqual([{ cmd: '22' }]);
      expect(back.take()).toEqual([]);
      counts.release();
      await settle();
      const got = back.take().map((m) => m.cmd);
      expect(got.filter((cmd) => cmd === '70')).toHaveLength(1);
      expect(got.indexOf('03')).toBeLessThan(got.indexOf('70'));
    });

    it('through a rename, and not to whoever took the old name since', async () => {
      const { b, ann, bob, release } = await heldWhisper();
      send(bob, { cmd: '5', newNickname: 'rob' });
      await settle();
      const other = connect(b, 'bob');
      await settle();
      expect(other.take()).toMatchObject([{ cmd: '03' }]);
      bob.take();
      ann.take();
      await release();
      expect(ann.take()).toEqual([{ cmd: '22' }]);
      expect(bob.take()).toEqual([{ cmd: '70', from: 'ann', msg: 'psst' }]);
      expect(other.take()).toEqual([]);
    });
  });

  it('keeps nicknames unique and the lobby at capacity across nodes', async () => {
    const [a, b, c] = nodes(3);
    const first = connect(a!, 'ann');
    const dup = connect(b!, 'ANN');
    await settle();
    expect(first.take()).toHaveLength(1);
    expect(dup.take()).toEqual([{ cmd: '01' }]);
    expect(dup.closedWith).toBe('nickname-taken');
    const racers = [b, c, a, b, c].map((chat, i) => connect(chat!, `p${i}`));
    await settle();
    const admitted = racers.filter((p) => p.closedWith === undefined);
    expect(admitted).toHaveLength(2);
    for (const p of racers.filter((r) => r.closedWith !== undefined)) {
      expect(p.take()).toEqual([{ cmd: '02' }]);
      expect(p.closedWith).toBe('room-full');
    }
    // Refused claims were released: the names are free again.
    const again = connect(a!, 'p4');
    await settle();
    expect(again.take()).toEqual([{ cmd: '02' }]);
  });

  it('renames across nodes; the name taken elsewhere is refused', async () => {
    const { b, ann, bob } = await annAndBob(EXT);
    ann.take();
    bob.take();
    send(ann, { cmd: '5', newNickname: 'Bob' });
    await settle();
    expect(ann.take()).toEqual([{ cmd: '50' }]);
    send(ann, { cmd: '5', newNickname: 'anna' });
    await settle();
    expect(ann.take()).toEqual([{ cmd: '51', newNickname: 'anna' }]);
    expect(bob.take()).toMatchObject([{ cmd: '91', oldNickname: 'ann', newNickname: 'anna' }]);
    const late = connect(b, 'ann');
    await settle();
    expect(late.take()).toMatchObject([{ cmd: '03', userCount: 3 }]);
  });

  it('admits exactly the capacity of a room to racing joins on several nodes', async () => {
    const chats = nodes(3, { maxUsers: 100, roomCapacity: 10 });
    const peers = Array.from({ length: 30 }, (_, i) => connect(chats[i % 3]!, `u${i}`, EXT));
    await settle();
    for (const p of peers) p.take();
    for (const p of peers) send(p, { cmd: '100', room: 'physics' });
    await settle();
    let inside = 0;
    let full = 0;
    for (const p of peers) {
      for (const m of p.take()) {
        if (m.cmd === '101') inside++;
        if (m.cmd === '90' && m.code === 1012) full++;
      }
    }
    expect(inside).toBe(10);
    expect(full).toBe(20);
  });

  it('delivers each chat once, in id order, to members on every node', async () => {
    const chats = nodes(3, { maxUsers: 30 });
    const peers = chats.map((chat, i) => connect(chat, `m${i}`, [...EXT, 'history']));
    await settle();
    for (const p of peers) p.take();
    for (let i = 0; i < 20; i++) send(peers[i % 3]!, { cmd: '7', msg: `n${i}` });
    await settle();
    for (const [i, p] of peers.entries()) {
      const seen = p
        .take()
        .filter((m) => m.cmd === '70')
        .map((m) => (m as { msg: string }).msg);
      const expected = Array.from({ length: 20 }, (_, k) => k)
        .filter((k) => k % 3 !== i)
        .map((k) => `n${k}`);
      expect(seen).toEqual(expected);
    }
  });

  it('tells the rooms of a dead node that its members left, and frees their names', async () => {
    const [a, b] = nodes(2);
    const ann = connect(a!, 'ann');
    connect(b!, 'bob');
    await settle();
    ann.take();
    const presence = (b as Chat).cluster!.presence as MemoryPresence;
    // Node b goes silent: a reaps it as its keeper would once the timeout passed.
    const dead = await presence.close();
    a!.reaped([{ node: presence.node, members: dead }]);
    await settle();
    expect(ann.take()).toEqual([{ cmd: '30', nickname: 'bob', userCount: 1 }]);
    const bob = connect(a!, 'bob');
    await settle();
    expect(bob.take()).toMatchObject([{ cmd: '03', userCount: 2 }]);
  });

  it('logs the removal of a dead node, also one whose members all went elsewhere', async () => {
    const warned: [object, string][] = [];
    const logger = {
      debug() {},
      info() {},
      error() {},
      warn: (f: object, m: string) => warned.push([f, m]),
    };
    const [a, b] = nodes(2, { logger });
    const presence = b!.cluster!.presence as MemoryPresence;
    const dead = await presence.close();
    a!.reaped([{ node: presence.node, members: dead }]);
    expect(warned).toEqual([
      [
        { node: presence.node, members: 0 },
        'a node stopped answering and was removed from the cluster',
      ],
    ]);
  });

  it('removes the members of a ban whose notice it missed when it reads the bans again', async () => {
    const { a, b, ann, bob } = await annAndBob();
    ann.take();
    bob.take();
    // Stored in Presence with no notice sent: as if node a's subscriber was down when it went.
    const ban = { mask: 'bob', by: 'op', reason: 'spam', expires: null };
    await a.cluster!.presence.ban(parseMask('bob').key, ban, Date.now());
    await settle();
    expect(bob.session.state).toBe('joined');
    await b.refreshBans();
    await settle();
    expect(bob.session.state).toBe('closed');
    expect(ann.take()).toContainEqual({ cmd: '30', nickname: 'bob', userCount: 1 });
    // Read again, the same ban is not news: nobody else is removed.
    await a.refreshBans();
    await settle();
    expect(ann.session.state).toBe('joined');
  });

  it('frees what a client claimed when it goes while its CONNECT waits for Presence', async () => {
    const [a, b] = nodes(2);
    const gone = connect(a!, 'ann');
    gone.session.ended('lost');
    await settle();
    // What it sent is handled, as one process handles it at once; then it leaves.
    expect(gone.session.state).toBe('closed');
    const again = connect(b!, 'ann');
    await settle();
    expect(again.take()).toMatchObject([{ cmd: '03', userCount: 1 }]);
  });

  it('keeps no token, identity or origin of a client that went while its CONNECT waited for Presence', async () => {
    const [a] = nodes(1);
    const gone = connect(a!, 'ann', ['errors', 'rooms', 'renames', 'history']);
    gone.session.ended('lost');
    await settle();
    expect(identities(a).sizes).toEqual({ tokens: 0, senders: 0, origins: 0 });
  });

  it('subscribes a node to a room while it has members there, and counts across nodes', async () => {
    const hub = new MemoryBrokerHub();
    const presenceHub = new PresenceHub();
    const history = new MemoryHistoryStore({ retention: { maxMessages: 10, maxAgeMs: 0 } });
    const [a, b] = ['n0', 'n1'].map(
      (node) =>
        new Chat({
          history,
          cluster: {
            presence: new MemoryPresence({ hub: presenceHub, node }),
            broker: new MemoryBroker({ hub, node }),
            originOf: senderOrigin,
          },
        }),
    );
    const ann = connect(a!, 'ann', EXT);
    const bob = connect(b!, 'bob', EXT);
    await settle();
    for (const p of [ann, bob]) send(p, { cmd: '100', room: 'physics' });
    await settle();
    const key = a!.rooms.find('physics')!.key;
    expect(hub.subscribers.get(key)).toHaveLength(2);
    ann.take();
    send(bob, { cmd: '102', room: 'physics' });
    await settle();
    expect(ann.take()).toEqual([{ cmd: '30', nickname: 'bob', userCount: 1, room: 'physics' }]);
    expect(hub.subscribers.get(key)).toHaveLength(1);
    send(bob, { cmd: '104' });
    await settle();
    // Bob's node no longer has the room, but ann is in it on hers: ROOMS lists it.
    expect(bob.take()).toContainEqual({
      cmd: '105',
      rooms: [
        { room: 'lobby', userCount: 2, joined: true },
        { room: 'physics', userCount: 1, joined: false },
      ],
    });
    send(ann, { cmd: '3' });
    await settle();
    expect(hub.subscribers.get(key)).toBeUndefined();
  });

  it('shows a room under the name it was made with on any node, whatever spelling a joiner gives', async () => {
    const { a, b, ann, bob } = await annAndBob(EXT, { maxUsers: 10 });
    await settle();
    for (const peer of [ann, bob]) peer.take();
    send(ann, { cmd: '100', room: 'Physics' });
    await settle();
    send(bob, { cmd: '100', room: 'PHYSICS' });
    await settle();
    expect(b.rooms.find('physics')?.name).toBe('Physics');
    send(ann, { cmd: '7', msg: 'hi', room: 'Physics' });
    send(bob, { cmd: '7', msg: 'hello', room: 'physICS' });
    await settle();
    const rooms = (peer: FakePeer) =>
      peer.take().flatMap((m) => ('room' in m ? [`${m.cmd} ${m.room}`] : []));
    expect(rooms(bob)).toEqual(['101 Physics', '70 Physics']);
    expect(rooms(ann)).toEqual(['101 Physics', '8 Physics', '70 Physics']);
    expect(a.rooms.find('physics')?.name).toBe('Physics');
  });

  it('hands a room made by two racing look-alike joins on one node over under the name it shows', async () => {
    const { a, b, ann, bob } = await annAndBob(EXT, { maxUsers: 10 });
    const bea = connect(b, 'bea', EXT);
    await settle();
    for (const peer of [ann, bob, bea]) peer.take();
    // Both joins are admitted before either reaches Presence: bob's makes the room.
    send(bob, { cmd: '100', room: 'Physics' });
    send(bea, { cmd: '100', room: 'physics' });
    await settle();
    expect(b.rooms.find('physics')?.name).toBe('Physics');
    send(ann, { cmd: '100', room: 'PHYSICS' });
    await settle();
    expect(a.rooms.find('physics')?.name).toBe('Physics');
    for (const peer of [ann, bob, bea]) peer.take();
    send(ann, { cmd: '7', msg: 'hi', room: 'Physics' });
    await settle();
    const rooms = (peer: FakePeer) =>
      peer.take().flatMap((m) => ('room' in m ? [`${m.cmd} ${m.room}`] : []));
    expect(rooms(bob)).toEqual(['70 Physics']);
    expect(rooms(bea)).toEqual(['70 Physics']);
  });

  it('hands a room over under the name it shows when a look-alike join comes in while a resume brings it to the node', async () => {
    const { brokers, a, b } = interruptibleNodes();
    const sam = connect(b, 'sam', RESUMING);
    const cora = connect(b, 'cora', RESUMING);
    const bea = connect(a, 'bea', RESUMING);
    await settle();
    const token = tokenOf(sam);
    send(sam, { cmd: '100', room: 'Physics' });
    send(cora, { cmd: '100', room: 'physics' });
    await settle();
    // bea's join into the same room, spelt otherwise, comes in as sam's resume on node a
    // subscribes to the room, before it is registered there.
    const broker = brokers[0]!;
    const subscribe = broker.subscribe.bind(broker);
    let joining = false;
    broker.subscribe = (room) => {
      const subscribed = subscribe(room);
      if (room.name === 'Physics' && !joining) {
        joining = true;
        send(bea, { cmd: '100', room: 'PHYSICS' });
      }
      return subscribed;
    };
    const back = connectWith(a, { cmd: '0', nickname: 'sam', caps: RESUMING, resume: token });
    await settle();
    expect(joining).toBe(true);
    expect(a.rooms.find('physics')?.name).toBe('Physics');
    for (const peer of [back, bea, cora]) peer.take();
    send(cora, { cmd: '7', msg: 'hi', room: 'physics' });
    await settle();
    const rooms = (peer: FakePeer) =>
      peer.take().flatMap((m) => (m.cmd === '70' && 'room' in m ? [m.room] : []));
    expect(rooms(back)).toEqual(['Physics']);
    expect(rooms(bea)).toEqual(['Physics']);
  });

  it('shows the joins, leaves and renames a node missed while its subscription was down', async () => {
    const { brokers, a, b } = interruptibleNodes();
    const cora = connect(a!, 'cora');
    const rex = connect(a!, 'rex', EXT);
    await settle();
    const stay = connect(b!, 'stay');
    const gone = connect(b!, 'gone');
    const ren = connect(b!, 'ren');
    await settle();
    cora.take();
    rex.take();
    brokers[0]!.interrupt();
    send(gone, { cmd: '3' });
    send(ren, { cmd: '5', newNickname: 'renee' });
    await settle();
    connect(b!, 'newb');
    send(stay, { cmd: '7', msg: 'still here' });
    await settle();
    expect(cora.take()).toEqual([]);
    brokers[0]!.reconnect();
    await settle();
    // The chat from history, then a "30" or "8" per change, each with the count after it.
    const told = [
      { cmd: '70', from: 'stay', msg: 'still here' },
      { cmd: '30', nickname: 'gone', userCount: 4 },
      { cmd: '30', nickname: 'ren', userCount: 3 },
      { cmd: '8', nickname: 'renee', userCount: 4 },
      { cmd: '8', nickname: 'newb', userCount: 5 },
    ];
    expect(cora.take()).toEqual(told);
    expect(rex.take()).toMatchObject(told.map((m) => ({ ...m, room: 'lobby' })));
    send(cora, { cmd: '1' });
    await settle();
    const [users] = cora.take() as { users: string[][] }[];
    expect(users!.users.map((u) => u[0])).toEqual(['cora', 'rex', 'stay', 'renee', 'newb']);
    // Live again: the next change is shown once, as ever.
    send(stay, { cmd: '3' });
    await settle();
    expect(cora.take()).toEqual([{ cmd: '30', nickname: 'stay', userCount: 4 }]);
  });

  it('shows the rename of a name’s earlier holder, arriving after the name was taken, as a join', async () => {
    const { a, b, handlers } = interruptibleNodes();
    const wit = connect(a, 'wit', ['renames']);
    await settle();
    const eve = connect(b, 'eve');
    await settle();
    expect(wit.take()).toContainEqual({ cmd: '8', nickname: 'eve', userCount: 2 });
    // Node a gets eve's rename only after the join of the next "eve" (from another node, as
    // a PUBLISH may arrive later than one sent after it).
    const late = holdBack(handlers[0]!, 'renamed');
    send(eve, { cmd: '5', newNickname: 'eva' });
    await settle();
    connect(b, 'eve');
    await settle();
    expect(late.release()).toBe(1);
    await settle();
    // Counted as wit was shown them: wit and eve, then wit alone, then the two eves.
    expect(wit.take()).toEqual([
      { cmd: '30', nickname: 'eve', userCount: 1 },
      { cmd: '8', nickname: 'eve', userCount: 2 },
      { cmd: '8', nickname: 'eva', userCount: 3 },
    ]);
    // The next "eve" is still shown there: its own leave is shown, once.
    send(eve, { cmd: '3' });
    await settle();
    expect(wit.take()).toEqual([{ cmd: '30', nickname: 'eva', userCount: 2 }]);
  });

  it('knows its own chat by who sent it, not by name, when it comes back after a rename', async () => {
    const { brokers, a, b } = interruptibleNodes();
    const sam = connect(a!, 'sam');
    const wit = connect(a!, 'wit');
    await settle();
    const far = connect(b!, 'far');
    await settle();
    // The node's own chat does not come back at once (as when an earlier id from another
    // node has not arrived yet), and its sender renames meanwhile.
    await helloThenRename(brokers[0]!, sam);
    const hello = { cmd: '70', from: 'sam', msg: 'hello' };
    expect(far.take()).toContainEqual(hello);
    for (const peer of [sam, wit]) peer.take();
    brokers[0]!.reconnect();
    await settle();
    expect(sam.take()).not.toContainEqual(hello);
    expect(wit.take()).toContainEqual(hello);
    expect(far.take()).toEqual([]);
  });

  it('does not show its own chats to their sender when more wait than it remembers senders of', async () => {
    const { brokers, a } = interruptibleNodes();
    const sam = connect(a, 'sam');
    const wit = connect(a, 'wit');
    await settle();
    for (const peer of [sam, wit]) peer.take();
    // None comes back at once: more wait than the 4096 whose senders the node keeps.
    brokers[0]!.interrupt();
    const count = 4100;
    for (let i = 0; i < count; i++) send(sam, { cmd: '7', msg: `m${i}` });
    await settle();
    brokers[0]!.reconnect();
    await settle();
    expect(wit.take().filter((m) => m.cmd === '70')).toHaveLength(count);
    expect(sam.take().filter((m) => m.cmd === '70')).toEqual([]);
  });

  it("shows another node's chat to the member who took its sender's name while it travelled", async () => {
    const { brokers, wit } = await nameTakenWhileTravelling();
    wit.take();
    brokers[0]!.reconnect();
    await settle();
    // One process would have shown wit the chat: it was a member when it was sent.
    expect(wit.take()).toContainEqual(
      expect.objectContaining({ cmd: '70', from: 'sam', msg: 'hello' }),
    );
  });

  it("shows another node's chat to the member who took its sender's name and chatted under it while it travelled", async () => {
    const { brokers, wit } = await nameTakenWhileTravelling();
    // Its own chat under the name is stored after the other's: it cannot be the sender of that.
    send(wit, { cmd: '7', msg: 'mine' });
    await settle();
    wit.take();
    brokers[0]!.reconnect();
    await settle();
    const chats = wit.take().filter((m) => m.cmd === '70');
    expect(chats).toEqual([expect.objectContaining({ from: 'sam', msg: 'hello' })]);
  });

  it.each([
    ['', false],
    [' after it renamed, but to whoever took the name', true],
  ])(
    'does not show a chat from the connection a resume replaced on another node to the member%s',
    async (_, rename) => {
      const { brokers, a, b } = interruptibleNodes();
      const caps = ['errors', 'rooms', 'renames', 'history'];
      const wit = connect(a, 'wit', caps);
      const sam = connect(b, 'sam', caps);
      await settle();
      const token = tokenOf(sam);
      // It resumes on node a, and the notice that would close its old connection on node b
      // is lost on the way (pub/sub delivers at most once): that connection goes on a while.
      const notify = brokers[0]!.notify;
      brokers[0]!.notify = () => Promise.resolve(true);
      const back = connectWith(a, { cmd: '0', nickname: 'sam', caps, resume: token });
      await settle();
      brokers[0]!.notify = notify;
      expect(back.take()).toContainEqual(expect.objectContaining({ cmd: '03', resumed: true }));
      // The old connection's chat reaches node a late, after the resume read the room.
      brokers[0]!.interrupt();
      send(sam, { cmd: '7', msg: 'hello' });
      await settle();
      if (rename) {
        // Before it arrives, the member renames and wit takes the name it had.
        send(back, { cmd: '5', newNickname: 'samuel' });
        await settle();
        send(wit, { cmd: '5', newNickname: 'sam' });
        await settle();
      }
      for (const peer of [wit, back]) peer.take();
      brokers[0]!.reconnect();
      await settle();
      const hello = expect.objectContaining({ cmd: '70', from: 'sam', msg: 'hello' });
      const seen = wit.take();
      expect(seen).toContainEqual(hello);
      const got = back.take();
      expect(got).not.toContainEqual(hello);
      // It is told the chat's id, as one process tells the connection that took it over.
      const id = (seen.find((m) => m.cmd === '70' && m.msg === 'hello') as { id: number }).id;
      expect(got.filter((m) => m.cmd === '71')).toEqual([
        { cmd: '71', room: 'lobby', id, at: expect.any(Number) },
      ]);
    },
  );

  it('tells a member none of its chats twice when many of their copies come after their replies', async () => {
    const [a] = nodes(1, { maxUsers: 10, rateLimit: 0 });
    const broker = a!.cluster!.broker as MemoryBroker;
    const sam = connect(a!, 'sam', RESUMING);
    await settle();
    sam.take();
    broker.interrupt();
    for (let i = 0; i < 300; i++) send(sam, { cmd: '7', msg: `m${i}`, cid: `c${i}` });
    await settle();
    broker.reconnect();
    await settle();
    const acks = sam.take().filter((m) => m.cmd === '71') as { id: number; cid?: string }[];
    expect(acks.map((m) => m.cid)).toEqual(Array.from({ length: 300 }, (_, i) => `c${i}`));
  });

  it('tells a connection resuming from another node of its old connection’s chats only after its "03", and none its replay showed', async () => {
    const { b, handlers, sam, wit, token } = await samOnAWitOnB();
    // The copy of sam's chat reaches node b only while the resume's takeover is under way.
    const late = holdBack(handlers[1]!, 'chat');
    send(sam, { cmd: '7', msg: 'hello' });
    await settle();
    expect(sam.take()).toContainEqual(expect.objectContaining({ cmd: '71', id: 1 }));
    const got = await resumeReleasing(b, token, late);
    expect(got[0]).toMatchObject({ cmd: '03', resumed: true });
    // Its "101" replayed the chat: it is not told of it again.
    expect(got).toContainEqual(expect.objectContaining({ cmd: '70', msg: 'hello', id: 1 }));
    expect(got.filter((m) => m.cmd === '71')).toEqual([]);
    void wit;
  });

  it('tells a connection resuming from another node of a chat in a room it left only after its "03"', async () => {
    const { b, handlers, sam, wit, token } = await samOnAWitOnB();
    // wit keeps node b subscribed to physics, which sam leaves right after chatting there.
    send(sam, { cmd: '100', room: 'physics' });
    send(wit, { cmd: '100', room: 'physics' });
    await settle();
    const late = holdBack(handlers[1]!, 'chat');
    send(sam, { cmd: '7', msg: 'hello', room: 'physics' } as Request);
    await settle();
    send(sam, { cmd: '102', room: 'physics' });
    await settle();
    const got = await resumeReleasing(b, token, late);
    expect(got[0]).toMatchObject({ cmd: '03', resumed: true });
    expect(got.filter((m) => m.cmd === '71')).toEqual([
      { cmd: '71', room: 'physics', id: 1, at: expect.any(Number) },
    ]);
    void wit;
  });

  it('shows a connection whose resume took nothing, under the token’s identity, its old chat once', async () => {
    const { b, handlers, sam, wit, token } = await samOnAWitOnB();
    const late = holdBack(handlers[1]!, 'chat');
    send(sam, { cmd: '7', msg: 'hello' });
    await settle();
    // Its connection ends: the token takes nothing over, but names the session's identity.
    sam.session.ended('lost');
    await settle();
    const presence = b.cluster!.presence;
    const takeOver = presence.takeOver.bind(presence);
    presence.takeOver = async (...args) => {
      const taken = await takeOver(...args);
      late.release();
      return taken;
    };
    const back = connectWith(b, { cmd: '0', nickname: 'x', caps: RESUMING, resume: token });
    await settle();
    const got = back.take();
    expect(got[0]).toMatchObject({ cmd: '03', resumed: false });
    // The room's history shows it; it is not told again as "71".
    expect(got).toContainEqual(expect.objectContaining({ cmd: '70', msg: 'hello', id: 1 }));
    expect(got.filter((m) => m.cmd === '71')).toEqual([]);
    void wit;
  });

  it('acknowledges a chat of the session a resume on its node takes over only after the "03"', async () => {
    const [a] = nodes(1, { maxUsers: 10 });
    const history = (a as unknown as { history: MemoryHistoryStore }).history;
    const ann = connect(a!, 'ann', RESUMING);
    await settle();
    const token = tokenOf(ann);
    // The chat is stored while the resume waits on Presence, before its "03".
    const append = history.append.bind(history);
    let store!: () => void;
    const stored = new Promise<void>((resolve) => {
      store = resolve;
    });
    history.append = async (...args) => {
      await stored;
      return append(...args);
    };
    send(ann, { cmd: '7', msg: 'hello', cid: 'c1' } as Request);
    await settle();
    const presence = a!.cluster!.presence;
    const count = presence.count.bind(presence);
    presence.count = async (...args) => {
      store();
      await settle();
      return count(...args);
    };
    const back = connectWith(a!, { cmd: '0', nickname: 'x', caps: RESUMING, resume: token });
    for (let i = 0; i < 50 && !back.outbox.some((m) => m.cmd === '101'); i++) await settle();
    const got = back.take();
    expect(got[0]).toMatchObject({ cmd: '03', resumed: true });
    expect(got.filter((m) => m.cmd === '71')).toEqual([
      expect.objectContaining({ cmd: '71', id: 1, cid: 'c1' }),
    ]);
  });

  it('tells a member each of its chats stored on its node once, its copy early, in step or late', async () => {
    const { brokers, a } = interruptibleNodes();
    const caps = ['errors', 'rooms', 'renames', 'history'];
    const sam = connect(a, 'sam', caps);
    await settle();
    sam.take();
    // Several under way at once: the copies can come before the replies.
    for (let i = 0; i < 3; i++) send(sam, { cmd: '7', msg: `m${i}`, cid: `c${i}` });
    await settle();
    // The room catching up: copies of its chats come after their replies.
    brokers[0]!.interrupt();
    for (let i = 3; i < 5; i++) send(sam, { cmd: '7', msg: `m${i}` });
    await settle();
    brokers[0]!.reconnect();
    await settle();
    const acks = sam.take().filter((m) => m.cmd === '71') as { id: number; cid?: string }[];
    expect(acks.map((m) => m.id)).toEqual([1, 2, 3, 4, 5]);
    expect(acks.map((m) => m.cid)).toEqual(['c0', 'c1', 'c2', undefined, undefined]);
  });

  it('shows the earlier holder of a name leaving when a rename to the name arrives before that leave', async () => {
    const { a, b, handlers } = interruptibleNodes();
    const wit = connect(a, 'wit');
    const rex = connect(a, 'rex', ['renames']);
    const bob = connect(b, 'bob');
    const ann = connect(b, 'ann');
    await settle();
    for (const peer of [wit, rex]) peer.take();
    // Node a gets bob's leave only after ann's rename to "bob" (Presence freed the name
    // before the leave went out, and a PUBLISH may arrive later than one sent after it).
    const late = holdBack(handlers[0]!, 'left');
    send(bob, { cmd: '3' });
    await settle();
    send(ann, { cmd: '5', newNickname: 'bob' });
    await settle();
    expect(late.release()).toBe(1);
    await settle();
    // As one process shows it: bob leaves, then ann is bob (nothing, without "renames").
    expect(wit.take()).toEqual([{ cmd: '30', nickname: 'bob', userCount: 3 }]);
    expect(rex.take()).toEqual([
      { cmd: '30', nickname: 'bob', userCount: 3 },
      { cmd: '91', oldNickname: 'ann', newNickname: 'bob' },
    ]);
  });

  /** Nodes a and b, sam a member of b, and a's subscription down while sam says "before". */
  async function cutOffWhileSamSays() {
    const nodes = interruptibleNodes();
    const sam = connect(nodes.b, 'sam', EXT);
    await settle();
    nodes.brokers[0]!.interrupt();
    send(sam, { cmd: '7', msg: 'before' });
    await settle();
    return nodes;
  }

  it('does not show a joiner the chats sent before its join that were still on their way', async () => {
    const { brokers, a, b } = interruptibleNodes();
    const wit = connect(a, 'wit');
    const sam = connect(b, 'sam', EXT);
    await settle();
    // Node a's subscription is down: b's chat reaches it only later, in its place.
    brokers[0]!.interrupt();
    send(sam, { cmd: '7', msg: 'before' });
    await settle();
    // The join's "03" waits for the join's place among the chats: after "before".
    const newcomer = connect(a, 'newcomer');
    await settle();
    expect(newcomer.take()).toEqual([]);
    brokers[0]!.reconnect();
    await settle();
    expect(newcomer.take()).toEqual([expect.objectContaining({ cmd: '03', userCount: 3 })]);
    send(sam, { cmd: '7', msg: 'after' });
    await settle();
    const chats = (peer: FakePeer) =>
      peer
        .take()
        .filter((m) => m.cmd === '70')
        .map((m) => m.msg);
    expect(chats(wit)).toEqual(['before', 'after']);
    expect(chats(newcomer)).toEqual(['after']);
  });

  it('keeps a joiner waiting for its place through a resync another node’s lost PUBLISH asked for', async () => {
    const { brokers, a, handlers } = await cutOffWhileSamSays();
    const newcomer = connect(a, 'newcomer');
    await settle();
    // Node a's subscription did not drop for this: its own join still comes back in its place.
    handlers[0]!.resync?.(a.lobby.key, 'publish');
    await settle();
    expect(newcomer.take()).toEqual([]);
    brokers[0]!.reconnect();
    await settle();
    expect(newcomer.take()).toEqual([expect.objectContaining({ cmd: '03', userCount: 2 })]);
  });

  it('answers a join at once when its own PUBLISH failed, and keeps the others waiting', async () => {
    const { brokers, a, handlers } = await cutOffWhileSamSays();
    const newcomer = connect(a, 'newcomer');
    const other = connect(a, 'other');
    await settle();
    expect(newcomer.take()).toEqual([]);
    handlers[0]!.unplaced?.(a.lobby.key, {
      type: 'joined',
      room: a.lobby.name,
      nickname: 'newcomer',
      count: 3,
    });
    await settle();
    // No reconnect and no timer: the join that may never come back is not waited for. Its
    // count is of the room as the node read it, with the other joiner in it already.
    expect(newcomer.take()).toEqual([expect.objectContaining({ cmd: '03', userCount: 3 })]);
    expect(other.take()).toEqual([]);
    brokers[0]!.reconnect();
    await settle();
    expect(other.take()[0]).toEqual(expect.objectContaining({ cmd: '03', userCount: 3 }));
    // Counted in its "03" already: its join is not shown again.
    expect(newcomer.take()).toEqual([]);
  });

  it('answers a join at the latest after a few seconds when its place does not come back', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const { a } = await cutOffWhileSamSays();
      const newcomer = connect(a, 'newcomer');
      await settle();
      expect(newcomer.take()).toEqual([]);
      vi.advanceTimersByTime(3_000);
      await settle();
      expect(newcomer.take()).toEqual([expect.objectContaining({ cmd: '03' })]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('forgets its own chats whose copy came before the append did, so ids that start over reach everyone', async () => {
    // On Redis the subscriber connection can beat the command connection: a chat's copy
    // arrives before its append's reply, and publish then finds it handed over already.
    // Not something a test can time on a real Redis, so this broker does it every time.
    const { chat, handler } = echoingNode();
    const alice = connect(chat, 'alice');
    const bob = connect(chat, 'bob');
    await settle();
    for (const peer of [alice, bob]) peer.take();
    send(alice, { cmd: '7', msg: 'one' });
    send(alice, { cmd: '7', msg: 'two' });
    await settle();
    expect(alice.take()).toEqual([]);
    expect(bob.take()).toEqual([
      { cmd: '70', from: 'alice', msg: 'one' },
      { cmd: '70', from: 'alice', msg: 'two' },
    ]);
    // Redis restarted empty: the lobby's ids start over in a new epoch, and id 1 is carol's.
    const key = chat.lobby.key;
    handler().lost?.(key, 'epoch', 'e2');
    handler().room(key, { type: 'chat', room: 'lobby', id: 1, at: 0, from: 'carol', msg: 'new' });
    handler().room(key, { type: 'chat', room: 'lobby', id: 2, at: 0, from: 'carol', msg: 'newer' });
    for (const peer of [alice, bob]) {
      expect(peer.take()).toEqual([
        { cmd: '70', from: 'carol', msg: 'new' },
        { cmd: '70', from: 'carol', msg: 'newer' },
      ]);
    }
  });

  it('knows its own chat stored in the epoch a Redis restart began after its sender renamed', async () => {
    // The append waited out the restart and ran on the new Redis; the node learns of the new
    // epoch only afterwards, when its subscription catches up, and the sender has renamed.
    const { alice, bob, helloComesBack } = await restartableNode();
    send(alice, { cmd: '7', msg: 'hello' });
    await settle();
    send(alice, { cmd: '5', newNickname: 'alicia' });
    await settle();
    for (const peer of [alice, bob]) peer.take();
    await helloComesBack();
    const hello = expect.objectContaining({ cmd: '70', from: 'alice', msg: 'hello' });
    expect(bob.take()).toContainEqual(hello);
    expect(alice.take()).not.toContainEqual(hello);
  });

  it.each([
    ['who kept its name', undefined],
    ['who renamed', 'alicia'],
  ])(
    'knows its own chat stored in a new epoch whose ids are below the last of the old one, from a sender %s',
    async (_, rename) => {
      // The append waited out a Redis restart and replied before the subscription caught up;
      // the room had more chats before the restart than after.
      const { handler, alice, bob, key, restart, helloComesBack, aliceChat } =
        await restartableNode();
      send(alice, { cmd: '7', msg: 'one' });
      await settle();
      aliceChat(1, 'one');
      handler().room(key, { type: 'chat', room: 'lobby', id: 2, at: 0, from: 'carol', msg: 'two' });
      handler().room(key, {
        type: 'chat',
        room: 'lobby',
        id: 3,
        at: 0,
        from: 'carol',
        msg: 'three',
      });
      restart();
      send(alice, { cmd: '7', msg: 'hello' });
      await settle();
      if (rename !== undefined) {
        send(alice, { cmd: '5', newNickname: rename });
        await settle();
      }
      for (const peer of [alice, bob]) peer.take();
      await helloComesBack();
      const hello = expect.objectContaining({ cmd: '70', from: 'alice', msg: 'hello' });
      expect(bob.take()).toContainEqual(hello);
      expect(alice.take()).not.toContainEqual(hello);
    },
  );

  it('forgets the members who closed while their chat was being stored', async () => {
    const [a, b] = nodes(2, { maxUsers: 10 });
    const watcher = connect(b!, 'watcher', EXT);
    await settle();
    for (let i = 0; i < 20; i++) {
      const room = `walk${i}`;
      const walker = connect(a!, `walker${i}`, EXT);
      await settle();
      send(walker, { cmd: '100', room });
      await settle();
      send(walker, { cmd: '7', room, msg: 'hi' });
      walker.session.ended('lost');
      await settle();
    }
    watcher.take();
    // No walker is left on node a to be known by its chats' origin.
    expect(identities(a).sizes.origins).toBe(0);
  });

  it('knows its own chat stored in a new epoch before the node learnt of it, after chats of the old one', async () => {
    // Found on three nodes and a Redis restarted mid-traffic: the append ran on the new Redis
    // (id 1 of a new epoch) while the node had handed over ids up to 5 of the old one; the
    // node learns of the new epoch only when its subscription catches up.
    const { handler, alice, bob, key, restart, helloComesBack, aliceChat } =
      await restartableNode();
    send(alice, { cmd: '7', msg: 'first' });
    await settle();
    aliceChat(1, 'first');
    for (let id = 2; id <= 5; id++) {
      handler().room(key, { type: 'chat', room: 'lobby', id, at: 0, from: 'carol', msg: `c${id}` });
    }
    await settle();
    for (const peer of [alice, bob]) peer.take();
    // Redis restarted empty.
    restart();
    send(alice, { cmd: '7', msg: 'hello' });
    await settle();
    // The old epoch's last chat, published before the restart, still arrives.
    handler().room(key, { type: 'chat', room: 'lobby', id: 6, at: 0, from: 'carol', msg: 'c6' });
    await helloComesBack();
    const hello = expect.objectContaining({ cmd: '70', from: 'alice', msg: 'hello' });
    expect(bob.take()).toContainEqual(hello);
    expect(alice.take()).not.toContainEqual(hello);
  });

  it("shows the loser of two resumes racing for one token the winner's chats, and the winner the loser's", async () => {
    const { a, caps, token } = await annOnOneNode();
    // Both present the token of the open session at once: one takes it, the other is an
    // ordinary CONNECT, which must not pass for the session that goes on.
    const first = connectWith(a!, { cmd: '0', nickname: 'first', caps, resume: token });
    const second = connectWith(a!, { cmd: '0', nickname: 'second', caps, resume: token });
    await settle();
    const resumed = (peer: typeof first) =>
      peer.take().some((m) => m.cmd === '03' && (m as { resumed?: boolean }).resumed === true);
    const [won, lost] = resumed(first) ? [first, second] : [second, first];
    expect(won.session.nickname).toBe('ann');
    expect(lost.session.state).toBe('joined');
    won.take();
    lost.take();
    send(won, { cmd: '7', msg: 'from the winner' });
    await settle();
    send(lost, { cmd: '7', msg: 'from the loser' });
    await settle();
    const fromWinner = expect.objectContaining({ cmd: '70', msg: 'from the winner' });
    const fromLoser = expect.objectContaining({ cmd: '70', msg: 'from the loser' });
    expect(lost.take()).toContainEqual(fromWinner);
    expect(won.take()).toContainEqual(fromLoser);
    // Once the loser has gone, the spent token still names nobody while the winner goes on.
    lost.session.ended('lost');
    await settle();
    const third = connectWith(a!, { cmd: '0', nickname: 'third', caps, resume: token });
    await settle();
    expect(resumed(third)).toBe(false);
    won.take();
    send(third, { cmd: '7', msg: 'from the third' });
    await settle();
    expect(won.take()).toContainEqual(
      expect.objectContaining({ cmd: '70', msg: 'from the third' }),
    );
  });

  it('follows a removal to the member a resume moved, never to whoever took its nickname', async () => {
    const [a, b, c] = nodes(3, { maxUsers: 10 });
    const caps = ['errors', 'rooms', 'renames', 'history'];
    const ann = connect(a!, 'ann', caps);
    await settle();
    const oldId = ann.session.presenceId;
    const token = tokenOf(ann);
    const back = connectWith(b!, { cmd: '0', nickname: 'whoever', caps, resume: token });
    await settle();
    expect(back.take()).toContainEqual(expect.objectContaining({ cmd: '03', resumed: true }));
    expect(ann.closedWith).toBe('replaced');
    // She renames, and someone else takes the name she had when the removal was sent.
    send(back, { cmd: '5', newNickname: 'anna' });
    await settle();
    const carl = connect(c!, 'ann', caps);
    await settle();
    expect(carl.session.state).toBe('joined');
    // The removal reaches her first node late, after all of that.
    const late: NodeNotice = {
      type: 'remove',
      member: oldId,
      action: 'ban',
      by: 'op',
      reason: 'late',
      seconds: undefined,
      nickname: 'ann',
      hops: 0,
    };
    a!.cluster!.broker.notify('node0', late);
    await settle();
    expect(back.closedWith).toBe('banned');
    expect(carl.session.state).toBe('joined');
    // Once the member has gone, a removal for any of its identities removes nobody.
    const newId = back.session.presenceId;
    a!.cluster!.broker.notify('node0', late);
    b!.cluster!.broker.notify('node1', { ...late, member: newId, nickname: 'anna' });
    await settle();
    expect(carl.session.state).toBe('joined');
    expect(carl.closedWith).toBeUndefined();
  });

  it('refuses a KICK passed on to the node a resume moved its target to when that node does not hear it (1022)', async () => {
    const [a, b, c] = nodes(3, { maxUsers: 10 });
    const caps = ['errors', 'rooms', 'renames', 'history'];
    const ann = connect(a!, 'ann', caps);
    const op = connect(c!, 'op', caps);
    await settle();
    const oldId = ann.session.presenceId;
    const back = connectWith(b!, { cmd: '0', nickname: 'ann', caps, resume: tokenOf(ann) });
    await settle();
    expect(back.take()).toContainEqual(expect.objectContaining({ cmd: '03', resumed: true }));
    // Her new node stops listening (it died, not reaped yet) as the KICK reaches her old one.
    await b!.cluster!.broker.close();
    op.take();
    const kick: NodeNotice = {
      type: 'remove',
      member: oldId,
      action: 'kick',
      by: 'teacher',
      reason: 'spam',
      seconds: undefined,
      nickname: 'ann',
      hops: 0,
      asker: { node: 'node2', member: op.session.presenceId, nickname: 'ann' },
    };
    a!.cluster!.broker.notify('node0', kick);
    await settle();
    expect(op.take()).toEqual([
      expect.objectContaining({ cmd: '90', code: ErrorCode.TRY_AGAIN, ref: '94' }),
    ]);
    expect(back.closedWith).toBeUndefined();
  });

  /**
   * An operator "teacher" (op, on node0) and a room "den" on node1's side: the "99" of a KICK
   * of bob published in den, and the 'kicked' notice that follows it to op's node.
   */
  async function kickRace() {
    const [a, b] = nodes(2, { maxUsers: 10 });
    const caps = ['errors', 'rooms', 'moderation'];
    const op = connect(a!, 'op', caps);
    const amy = connect(b!, 'amy', caps);
    await settle();
    op.session.operator = { name: 'teacher', verify: () => true };
    // Another session of the same operator name, in the room: told as any member.
    amy.session.operator = { name: 'teacher', verify: () => true };
    send(amy, { cmd: '100', room: 'den' } as Request);
    await settle();
    const kick = { nickname: 'bob', by: 'teacher', reason: 'spam' };
    return {
      a: a!,
      op,
      amy,
      published: () =>
        b!.cluster!.broker.publish(roomKey('den'), {
          type: 'moderated',
          room: 'den',
          action: 'kick',
          seconds: undefined,
          asker: { node: 'node0', member: op.session.presenceId },
          ...kick,
        }),
      noticed: () =>
        b!.cluster!.broker.notify('node0', {
          type: 'kicked',
          asker: { node: 'node0', member: op.session.presenceId, nickname: 'bob' },
          room: roomKey('den'),
          ...kick,
        }),
      answers: () => op.take().filter((m) => m.cmd === '99'),
    };
  }

  it('answers a KICK once when its operator joined the kick\'s room just after its "99" passed', async () => {
    const race = await kickRace();
    race.published();
    await settle();
    send(race.op, { cmd: '100', room: 'den' } as Request);
    await settle();
    race.noticed();
    await settle();
    expect(race.answers()).toEqual([expect.objectContaining({ nickname: 'bob', by: 'teacher' })]);
  });

  it('answers a KICK once when its operator left the kick\'s room after its "99" reached it', async () => {
    const race = await kickRace();
    send(race.op, { cmd: '100', room: 'den' } as Request);
    await settle();
    race.published();
    await settle();
    send(race.op, { cmd: '102', room: 'den' } as Request);
    await settle();
    race.noticed();
    await settle();
    expect(race.answers()).toEqual([expect.objectContaining({ nickname: 'bob', by: 'teacher' })]);
    expect(race.amy.take().filter((m) => m.cmd === '99')).toHaveLength(1);
  });

  it("answers a KICK once when the notice comes before its operator joins the kick's room and the room's copy after", async () => {
    const race = await kickRace();
    race.noticed();
    await settle();
    send(race.op, { cmd: '100', room: 'den' } as Request);
    await settle();
    race.published();
    await settle();
    expect(race.answers()).toHaveLength(1);
  });

  it('answers each KICK of the same member for the same reason, also with another session of the same operator name about', async () => {
    const race = await kickRace();
    // amy (operator "teacher" too) sees the first kick's copy in the room; it is not hers.
    race.published();
    await settle();
    race.noticed();
    await settle();
    expect(race.answers()).toHaveLength(1);
    expect(race.amy.take().filter((m) => m.cmd === '99')).toHaveLength(1);
    // amy now kicks bob again, for the same reason, from outside the room it is told in.
    send(race.amy, { cmd: '102', room: 'den' } as Request);
    await settle();
    race.amy.take();
    await race.a.cluster!.broker.notify('node1', {
      type: 'kicked',
      asker: { node: 'node1', member: race.amy.session.presenceId, nickname: 'bob' },
      room: roomKey('den'),
      nickname: 'bob',
      by: 'teacher',
      reason: 'spam',
    });
    await settle();
    expect(race.amy.take().filter((m) => m.cmd === '99')).toHaveLength(1);
  });

  it('answers a KICK once when the notice comes before the room\'s "99", which the room\'s other members still get', async () => {
    const race = await kickRace();
    send(race.op, { cmd: '100', room: 'den' } as Request);
    await settle();
    race.noticed();
    await settle();
    race.published();
    await settle();
    expect(race.answers()).toHaveLength(1);
    expect(race.amy.take().filter((m) => m.cmd === '99')).toHaveLength(1);
    // The next kick's "99" goes through the room again.
    race.published();
    await settle();
    expect(race.answers()).toHaveLength(1);
  });

  it('tells a room of a join whose member a resume moved away before its PART there', async () => {
    const [a, b, c] = nodes(3, { maxUsers: 10 });
    const caps = RESUMING;
    const watcher = connect(c!, 'wat', caps);
    await settle();
    send(watcher, { cmd: '100', room: 'den' });
    const dan = connect(a!, 'dan', caps);
    await settle();
    const token = tokenOf(dan);
    // dan's JOIN_ROOM has its place in Presence, and waits for the room's member list.
    const presence = a!.cluster!.presence;
    const real = presence.members.bind(presence);
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    vi.spyOn(presence, 'members').mockImplementation(async (room) => {
      await gate;
      return real(room);
    });
    send(dan, { cmd: '100', room: 'den' });
    await settle();
    watcher.take();
    // Meanwhile dan resumes on node b, with the place, and leaves the room at once.
    const back = connectWith(b!, { cmd: '0', nickname: 'x', caps, resume: token });
    await settle();
    expect(back.take()).toContainEqual(expect.objectContaining({ cmd: '03', resumed: true }));
    send(back, { cmd: '102', room: 'den' });
    await settle();
    open();
    await settle();
    const shown = watcher
      .take()
      .filter((m) => m.cmd === '8' || m.cmd === '30')
      .map((m) => `${m.cmd} ${m.nickname as string}`);
    expect(shown).toEqual(['8 dan', '30 dan']);
  });

  it('closes a connection whose RENAME finds its member moved by a resume, as replaced, not told the name is taken', async () => {
    const [a, b] = nodes(2);
    const ann = connect(a!, 'ann', [...EXT, 'history']);
    const bob = connect(b!, 'bob', EXT);
    await settle();
    const token = tokenOf(ann);
    bob.take();
    // A resume on node b took the member in Presence; its notice to node a is still on its way.
    const moved = await b!.cluster!.presence.takeOver(token, 'elsewhere', ann.session.address, 'n');
    expect(moved).toBeDefined();
    send(ann, { cmd: '5', newNickname: 'anna' });
    await settle();
    expect(ann.take()).not.toContainEqual(expect.objectContaining({ cmd: '50' }));
    expect(ann.closedWith).toBe('replaced');
    // Nobody is shown a rename, and the name stays free.
    expect(bob.take()).toEqual([]);
    expect(await b!.cluster!.presence.find('anna')).toBeUndefined();
  });

  it('refuses, and keeps, a connection whose RENAME finds its member lost by Presence but not moved', async () => {
    const [a, b] = nodes(2);
    const ann = connect(a!, 'ann', EXT);
    const bob = connect(b!, 'bob', EXT);
    await settle();
    ann.take();
    bob.take();
    // As after Redis restarted empty, before the node's next heartbeat registers it again.
    await a!.cluster!.presence.expel(ann.session.presenceId);
    send(ann, { cmd: '5', newNickname: 'anna' });
    await settle();
    expect(ann.take()).toEqual([expect.objectContaining({ cmd: '50' })]);
    expect(ann.closedWith).toBeUndefined();
    expect(bob.take()).toEqual([]);
  });

  it('closes a connection whose JOIN_ROOM finds its member moved by a resume, as replaced', async () => {
    const [a, b] = nodes(2);
    const ann = connect(a!, 'ann', [...EXT, 'history']);
    await settle();
    const token = tokenOf(ann);
    const moved = await b!.cluster!.presence.takeOver(token, 'elsewhere', ann.session.address, 'n');
    expect(moved).toBeDefined();
    send(ann, { cmd: '100', room: 'physics' });
    await settle();
    expect(ann.take()).toEqual([expect.objectContaining({ cmd: '90', code: ErrorCode.REPLACED })]);
    expect(ann.closedWith).toBe('replaced');
  });

  it('refuses, and keeps, a connection whose JOIN_ROOM finds its member lost by Presence but not moved', async () => {
    const [a, b] = nodes(2);
    const ann = connect(a!, 'ann', EXT);
    const bob = connect(b!, 'bob', EXT);
    await settle();
    send(bob, { cmd: '100', room: 'physics' });
    await settle();
    ann.take();
    bob.take();
    // As after Redis restarted empty, before the node's next heartbeat registers it again.
    await a!.cluster!.presence.expel(ann.session.presenceId);
    send(ann, { cmd: '100', room: 'physics' });
    await settle();
    expect(ann.take()).toEqual([
      expect.objectContaining({ cmd: '90', code: ErrorCode.TRY_AGAIN, ref: '100' }),
    ]);
    expect(ann.closedWith).toBeUndefined();
    expect(bob.take()).toEqual([]);
    // Nothing was left behind: the room is not ann's, and she can ask again.
    send(ann, { cmd: '102', room: 'physics' });
    await settle();
    expect(ann.take()).toContainEqual(
      expect.objectContaining({ cmd: '90', code: ErrorCode.NOT_IN_ROOM, ref: '102' }),
    );
  });

  it('closes a connection whose PART finds its member moved by a resume, as replaced, not told it left', async () => {
    const [a, b] = nodes(2);
    const ann = connect(a!, 'ann', [...EXT, 'history']);
    const bob = connect(b!, 'bob', EXT);
    await settle();
    for (const p of [ann, bob]) send(p, { cmd: '100', room: 'physics' });
    await settle();
    const key = a!.rooms.find('physics')!.key;
    const token = tokenOf(ann);
    ann.take();
    bob.take();
    const moved = await b!.cluster!.presence.takeOver(token, 'elsewhere', ann.session.address, 'n');
    expect(moved).toBeDefined();
    send(ann, { cmd: '102', room: 'physics' });
    await settle();
    expect(ann.take()).toEqual([expect.objectContaining({ cmd: '90', code: ErrorCode.REPLACED })]);
    expect(ann.closedWith).toBe('replaced');
    // The resumed session kept the room, and nobody was told she left it.
    expect(bob.take()).toEqual([]);
    expect((await b!.cluster!.presence.members(key)).map((m) => m.nickname)).toContain('ann');
  });

  it('tells a connection whose PART finds its member lost by Presence but not moved that it left, and the room', async () => {
    const [a, b] = nodes(2, { maxUsers: 10 });
    const ann = connect(a!, 'ann', EXT);
    const cat = connect(a!, 'cat', EXT);
    const bob = connect(b!, 'bob', EXT);
    await settle();
    for (const p of [ann, cat, bob]) send(p, { cmd: '100', room: 'physics' });
    await settle();
    for (const p of [ann, cat, bob]) p.take();
    await a!.cluster!.presence.expel(ann.session.presenceId);
    send(ann, { cmd: '102', room: 'physics' });
    await settle();
    expect(ann.take()).toEqual([{ cmd: '103', room: 'physics' }]);
    expect(ann.closedWith).toBeUndefined();
    // As on one process: the others in the room, on either node, see her go, once.
    const left = { cmd: '30', nickname: 'ann', userCount: 2, room: 'physics' };
    expect(cat.take()).toEqual([left]);
    expect(bob.take()).toEqual([left]);
  });

  it('closes, as a takeover does, the earlier copy of a member another node registered again after a reset', async () => {
    const [a, b] = nodes(2);
    const ann = connect(a!, 'ann', EXT);
    const bob = connect(a!, 'bob');
    await settle();
    ann.take();
    bob.take();
    // Removed from Presence as b's copy of ann displaced it when Redis came back empty, and
    // what b's heartbeat says then.
    await a!.cluster!.presence.expel(ann.session.presenceId);
    const presence = b!.cluster!.presence;
    const beat: Heartbeat = {
      status: 'reset',
      lost: [],
      displaced: [{ node: 'node0', id: ann.session.presenceId }],
    };
    const reset = Object.assign(Object.create(presence) as typeof presence, {
      heartbeat: () => Promise.resolve(beat),
      reap: () => Promise.resolve([]),
    });
    const keeper = new PresenceKeeper(
      reset,
      {
        onReaped: () => {},
        onExpired: () => {},
        onDisplaced: (members) => b!.displaced(members),
      },
      { intervalMs: 60_000 },
    );
    await keeper.tick();
    await settle();
    expect(ann.take()).toMatchObject([{ cmd: '90', code: 2007 }]);
    expect(ann.closedWith).toBe('replaced');
    // No leave is shown: the member is still there, as b's.
    expect(bob.take()).toEqual([]);
    expect(bob.session.state).toBe('joined');
  });

  it('keeps the rooms of a resume past --max-rooms, and refuses new rooms while over it', async () => {
    const [a, b] = nodes(2, { maxUsers: 10, maxRooms: 1 });
    const caps = ['errors', 'rooms', 'history'];
    const carl = connect(a!, 'carl', caps);
    const ann = connect(b!, 'ann', caps);
    await settle();
    send(carl, { cmd: '100', room: 'y' });
    send(ann, { cmd: '100', room: 'x' });
    await settle();
    expect(a!.rooms.count).toBe(1);
    const token = tokenOf(ann);
    carl.take();
    // Ann's session moves to a, with room x: a now knows two rooms, over its cap of one.
    const back = connectWith(a!, { cmd: '0', nickname: 'whoever', caps, resume: token });
    await settle();
    expect(back.take()).toContainEqual(expect.objectContaining({ cmd: '03', resumed: true }));
    expect([...back.session.rooms].map((r) => r.name).sort()).toEqual(['lobby', 'x']);
    expect(a!.rooms.count).toBe(2);
    // Rooms it knows still take members; a new one is refused until it is under the cap again.
    send(carl, { cmd: '100', room: 'x' });
    send(carl, { cmd: '100', room: 'w' });
    await settle();
    expect(carl.take()).toMatchObject([
      { cmd: '101', room: 'x' },
      { cmd: '90', code: 1019, ref: '100' },
    ]);
    send(back, { cmd: '102', room: 'x' });
    send(carl, { cmd: '102', room: 'x' });
    send(carl, { cmd: '102', room: 'y' });
    await settle();
    carl.take();
    send(carl, { cmd: '100', room: 'w' });
    await settle();
    expect(carl.take()).toMatchObject([{ cmd: '101', room: 'w' }]);
  });

  it('closes, as a takeover does, every member a heartbeat or a displacement names, and no other', async () => {
    const [a] = nodes(1, { maxUsers: 10 });
    const peers = ['ann', 'bob', 'cy', 'dee', 'eve'].map((name) => connect(a!, name, EXT));
    await settle();
    const [ann, , cy, dee, eve] = peers as [FakePeer, FakePeer, FakePeer, FakePeer, FakePeer];
    a!.goneAway([ann.session.presenceId, cy.session.presenceId, 'nobody']);
    a!.displaced([
      { node: 'node0', id: dee.session.presenceId },
      { node: 'elsewhere', id: eve.session.presenceId },
    ]);
    await settle();
    expect(peers.map((p) => p.closedWith)).toEqual([
      'replaced',
      undefined,
      'replaced',
      'replaced',
      undefined,
    ]);
  });

  it('closes the members a heartbeat names however many it names (a node of 200,000 members)', async () => {
    const [a] = nodes(1, { maxUsers: 10 });
    const ann = connect(a!, 'ann', EXT);
    const bob = connect(a!, 'bob', EXT);
    await settle();
    // As many names as a node with --max-conns 200000 may be told of after Redis came back
    // empty; all but one are of members gone meanwhile.
    const named = Array.from({ length: 200_000 }, (_, i) => `gone${i}`);
    named.push(ann.session.presenceId);
    a!.goneAway(named);
    a!.displaced(named.map((id) => ({ node: 'node0', id })));
    await settle();
    expect([ann.closedWith, bob.closedWith]).toEqual(['replaced', undefined]);
  });

  it('closes every local client with 3006 when cut off from the cluster', async () => {
    const [a] = nodes(1);
    const ann = connect(a!, 'ann', EXT);
    await settle();
    ann.take();
    a!.expired();
    expect(ann.take()).toMatchObject([{ cmd: '90', code: 3006 }]);
    expect(ann.closedWith).toBe('cluster-unavailable');
  });
});

describe("an operator's status on a resume through another node", () => {
  const withKey = (key: string) => ({ name: 'teacher', verify: (p: string) => p === 'pw', key });

  /** op proves itself on node a, then its session is taken over on node b: op's status there. */
  async function resumedStatus(reloadBoth?: string): Promise<string | undefined> {
    const [a, b] = nodes(2, { operators: [withKey('one')] });
    const op = connect(a!, 'op', [...RESUMING, 'moderation']);
    await settle();
    const token = tokenOf(op);
    send(op, { cmd: '92', name: 'teacher', password: 'pw' });
    await settle();
    expect(op.session.operator?.name).toBe('teacher');
    if (reloadBoth !== undefined) {
      for (const node of [a!, b!]) node.reconfigure({ operators: [withKey(reloadBoth)] });
    }
    const back = connectWith(b!, { cmd: '0', nickname: 'x', caps: RESUMING, resume: token });
    await settle();
    expect(back.take()).toContainEqual(expect.objectContaining({ cmd: '03', resumed: true }));
    return back.session.operator?.name;
  }

  it('comes back while the operator keeps its password', async () => {
    expect(await resumedStatus()).toBe('teacher');
    expect(await resumedStatus('one')).toBe('teacher');
  });

  it('does not come back once a reload changed the password', async () => {
    expect(await resumedStatus('two')).toBeUndefined();
  });
});

describe('a takeover on the node of the session it takes', () => {
  it('leaves the identity with that session when Presence fails the takeover', async () => {
    const caps = ['errors', 'rooms', 'renames', 'history'];
    const { a, ann, bob } = await annAndBob(caps, { maxUsers: 10 });
    const token = tokenOf(ann);
    send(ann, { cmd: '7', msg: 'first', cid: 'c1' });
    await settle();
    // Presence fails the resume (Redis lost, say): the new connection goes.
    const presence = a.cluster!.presence;
    vi.spyOn(presence, 'takeOver').mockRejectedValueOnce(new Error('redis down'));
    const back = connectWith(a, { cmd: '0', nickname: 'x', caps, resume: token });
    await settle();
    expect(back.take()).not.toContainEqual(expect.objectContaining({ cmd: '03' }));
    ann.take();
    bob.take();
    // ann still holds her identity: her chats stay hers, and a token of its form presented
    // here while she goes on names nobody, so its cid is no duplicate of hers.
    send(ann, { cmd: '7', msg: 'second' });
    const forged = connectWith(a, {
      cmd: '0',
      nickname: 'mal',
      caps,
      resume: `${token.slice(0, 12)}${'A'.repeat(24)}`,
    });
    await settle();
    send(forged, { cmd: '7', msg: 'first', cid: 'c1' });
    await settle();
    expect(ann.take()).not.toContainEqual(expect.objectContaining({ cmd: '70', msg: 'second' }));
    expect(forged.take()).toContainEqual(expect.objectContaining({ cmd: '71', cid: 'c1' }));
    expect(bob.take()).toContainEqual(
      expect.objectContaining({ cmd: '70', from: 'mal', msg: 'first' }),
    );
  });

  it('keeps the identity with the winner of a race for the token whose ghost went meanwhile', async () => {
    const { a, caps, ann, token } = await annOnOneNode();
    const presence = a!.cluster!.presence;
    const real = presence.takeOver.bind(presence);
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    // The first takes the member over in Presence, but hears so only later.
    vi.spyOn(presence, 'takeOver').mockImplementationOnce(async (...args) => {
      const taken = await real(...args);
      await gate;
      return taken;
    });
    const first = connectWith(a!, { cmd: '0', nickname: 'first', caps, resume: token });
    // The second loses at once (ann holds the identity again), then ann's connection goes.
    const second = connectWith(a!, { cmd: '0', nickname: 'second', caps, resume: token });
    await settle();
    ann.session.ended('lost');
    await settle();
    open();
    await settle();
    expect(first.take()).toContainEqual(
      expect.objectContaining({ cmd: '03', resumed: true, nickname: 'ann' }),
    );
    // The spent token names nobody while the first goes on with the identity.
    const third = connectWith(a!, { cmd: '0', nickname: 'third', caps, resume: token });
    await settle();
    third.take();
    second.take();
    send(first, { cmd: '7', msg: 'mine' });
    await settle();
    const mine = expect.objectContaining({ cmd: '70', msg: 'mine' });
    expect(first.take()).not.toContainEqual(mine);
    expect(third.take()).toContainEqual(mine);
    expect(second.take()).toContainEqual(mine);
  });

  it('keeps the identity with the session while a connection taking it over goes before Presence fails it', async () => {
    const [a] = nodes(1, { maxUsers: 10 });
    const caps = ['errors', 'rooms', 'renames', 'history'];
    const first = connect(a!, 'ann', caps);
    await settle();
    const spent = tokenOf(first);
    // ann resumes once: `spent` is spent while her session goes on.
    const ann = connectWith(a!, { cmd: '0', nickname: 'ann', caps, resume: spent });
    await settle();
    const token = tokenOf(ann);
    const presence = a!.cluster!.presence;
    let fail: (err: Error) => void = () => {};
    const answer = new Promise<never>((_, reject) => {
      fail = reject;
    });
    vi.spyOn(presence, 'takeOver').mockImplementationOnce(() => answer);
    const back = connectWith(a!, { cmd: '0', nickname: 'x', caps, resume: token });
    await settle();
    // It goes while Presence answers; meanwhile the spent token is presented.
    back.session.ended('lost');
    const mal = connectWith(a!, { cmd: '0', nickname: 'mal', caps, resume: spent });
    await settle();
    fail(new Error('redis down'));
    await settle();
    expect([ann.session.state, mal.session.nickname]).toEqual(['joined', 'mal']);
    mal.take();
    ann.take();
    send(mal, { cmd: '7', msg: 'not hers' });
    await settle();
    expect(ann.take()).toContainEqual(expect.objectContaining({ cmd: '70', msg: 'not hers' }));
  });

  it('names nobody with a spent token whose session goes on on another node', async () => {
    const [a, b] = nodes(2, { maxUsers: 10 });
    const caps = RESUMING;
    const first = connect(a!, 'ann', caps);
    await settle();
    const spent = tokenOf(first);
    // ann resumes on node b: `spent` is spent, and node a holds her identity no more.
    const ann = connectWith(b!, { cmd: '0', nickname: 'x', caps, resume: spent });
    await settle();
    expect(ann.take()).toContainEqual(expect.objectContaining({ cmd: '03', resumed: true }));
    expect(identities(a).sizes.senders).toBe(0);
    // The spent token presented on node a, and a token made up of her identity on node b.
    const mal = connectWith(a!, { cmd: '0', nickname: 'mal', caps, resume: spent });
    const forged = connectWith(b!, {
      cmd: '0',
      nickname: 'forger',
      caps,
      resume: `${spent.slice(0, 12)}${'A'.repeat(24)}`,
    });
    await settle();
    const malToken = tokenOf(mal);
    expect(malToken.slice(0, 12)).not.toBe(spent.slice(0, 12));
    expect(tokenOf(forged).slice(0, 12)).not.toBe(spent.slice(0, 12));
    ann.take();
    // Each is shown the others' chats: none of them is taken for another.
    send(ann, { cmd: '7', msg: 'from ann' });
    send(mal, { cmd: '7', msg: 'from mal' });
    await settle();
    expect(mal.take()).toContainEqual(expect.objectContaining({ cmd: '70', msg: 'from ann' }));
    expect(ann.take()).toContainEqual(expect.objectContaining({ cmd: '70', msg: 'from mal' }));
    expect(forged.take()).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ cmd: '70', msg: 'from ann' }),
        expect.objectContaining({ cmd: '70', msg: 'from mal' }),
      ]),
    );
    // mal's own token takes mal back, not ann.
    const back = connectWith(b!, { cmd: '0', nickname: 'y', caps, resume: malToken });
    await settle();
    expect(back.take()).toContainEqual(
      expect.objectContaining({ cmd: '03', resumed: true, nickname: 'mal' }),
    );
  });

  it('names the identity of a dead token presented on two nodes at once for one of them only', async () => {
    const [a, b, c] = nodes(3, { maxUsers: 10 });
    const first = connect(a!, 'ann', RESUMING);
    await settle();
    const token = tokenOf(first);
    first.session.ended('lost');
    await settle();
    // The same token, taking nothing over now, on two nodes at once (a client that dialled
    // again): neither node holds the identity, nor does Presence yet.
    const one = connectWith(b!, { cmd: '0', nickname: 'one', caps: RESUMING, resume: token });
    const two = connectWith(c!, { cmd: '0', nickname: 'two', caps: RESUMING, resume: token });
    await settle();
    const carried = [tokenOf(one), tokenOf(two)].filter((t) => t.startsWith(token.slice(0, 12)));
    expect(carried).toHaveLength(1);
    // Each is shown the other's chats.
    send(one, { cmd: '7', msg: 'from one' });
    send(two, { cmd: '7', msg: 'from two' });
    await settle();
    expect(two.take()).toContainEqual(expect.objectContaining({ cmd: '70', msg: 'from one' }));
    expect(one.take()).toContainEqual(expect.objectContaining({ cmd: '70', msg: 'from two' }));
    one.session.ended('lost');
    two.session.ended('lost');
    await settle();
    for (const chat of [b, c]) {
      expect(identities(chat).sizes).toEqual({ tokens: 0, senders: 0, origins: 0 });
    }
  });

  it('names the identity of a token whose session went with its node', async () => {
    const [a, b] = nodes(2, { maxUsers: 10 });
    const first = connect(a!, 'ann', RESUMING);
    await settle();
    const token = tokenOf(first);
    // Presence lets her go (her node was reaped, say): the token takes nothing over.
    await a!.cluster!.presence.release(first.session.presenceId);
    const back = connectWith(b!, { cmd: '0', nickname: 'ann2', caps: RESUMING, resume: token });
    await settle();
    expect(tokenOf(back).slice(0, 12)).toBe(token.slice(0, 12));
  });

  it('forgets a connection that closed while it took the session over', async () => {
    const { a, caps, ann, token } = await annOnOneNode();
    const presence = a!.cluster!.presence;
    const real = presence.takeOver.bind(presence);
    let back: ReturnType<typeof connectWith> | undefined;
    // The new connection goes while Presence answers; the takeover still succeeds.
    vi.spyOn(presence, 'takeOver').mockImplementationOnce(async (...args) => {
      const taken = await real(...args);
      back?.session.ended('lost');
      return taken;
    });
    back = connectWith(a!, { cmd: '0', nickname: 'x', caps, resume: token });
    await settle();
    expect(ann.closedWith).toBe('replaced');
    expect(back.session.state).toBe('closed');
    expect(identities(a).sizes.origins).toBe(0);
  });

  /**
   * Presence's `method` of node b fails its first answer (ReleaseRetried, as when the reply
   * from Redis was lost); the retry frees the member once `retry` is called.
   */
  function answerLost(b: Chat, method: 'release' | 'expel'): () => void {
    const presence = b.cluster!.presence;
    const real = presence[method].bind(presence);
    let retry = () => {};
    vi.spyOn(presence, method).mockImplementationOnce((id) => {
      const retried = new Promise<RoomLeft[] | undefined>((resolve) => {
        retry = () => resolve(real(id));
      });
      return Promise.reject(new ReleaseRetried(id, retried, new Error('connection lost')));
    });
    return () => retry();
  }

  it('tells the rooms of a member who left once the retry of a release whose answer was lost frees it', async () => {
    const { a, b, ann, bob } = await annAndBob();
    ann.take();
    const retry = answerLost(b, 'release');
    bob.session.ended('lost');
    await settle();
    expect(ann.take()).toEqual([]);
    retry();
    await settle();
    expect(ann.take()).toEqual([{ cmd: '30', nickname: 'bob', userCount: 1 }]);
    const again = connect(a, 'bob');
    await settle();
    expect(again.take()).toMatchObject([{ cmd: '03', userCount: 2 }]);
  });

  it('removes a member and tells its rooms once the retry of an expel whose answer was lost frees it', async () => {
    const { a, b, ann, bob } = await annAndBob();
    ann.take();
    const retry = answerLost(b, 'expel');
    const kick: NodeNotice = {
      type: 'remove',
      member: bob.session.presenceId,
      action: 'kick',
      by: 'op',
      reason: 'enough',
      seconds: undefined,
      nickname: 'bob',
      hops: 0,
    };
    a.cluster!.broker.notify('node1', kick);
    await settle();
    expect(bob.session.state).toBe('joined');
    retry();
    await settle();
    expect(bob.closedWith).toBe('kicked');
    expect(ann.take().filter((m) => m.cmd === '30')).toEqual([
      { cmd: '30', nickname: 'bob', userCount: 1 },
    ]);
  });

  /**
   * ann on node a and bob on node b, both in the lobby and "side"; bob PARTs "side" and
   * Presence's leave fails its answer, after applying it when `applied`.
   */
  async function partAnswerLost(applied: boolean): Promise<{ ann: FakePeer; bob: FakePeer }> {
    const caps = ['errors', 'rooms'];
    const { b, ann, bob } = await annAndBob(caps, { maxUsers: 10 });
    send(ann, { cmd: '100', room: 'side' } as Request);
    send(bob, { cmd: '100', room: 'side' } as Request);
    await settle();
    ann.take();
    const presence = b.cluster!.presence;
    const real = presence.leave.bind(presence);
    vi.spyOn(presence, 'leave').mockImplementationOnce(async (id, room) => {
      if (applied) await real(id, room);
      throw new Error('the connection to Redis closed before the reply');
    });
    send(bob, { cmd: '102', room: 'side' } as Request);
    await settle();
    return { ann, bob };
  }

  for (const applied of [true, false]) {
    it(`tells a room once that a member left whose PART lost its answer from Presence (${applied ? 'applied' : 'not applied'})`, async () => {
      const { ann, bob } = await partAnswerLost(applied);
      expect(bob.closedWith).toBe('internal-error');
      const left = ann.take().filter((m) => m.cmd === '30');
      expect(left).toHaveLength(2);
      expect(left).toContainEqual(
        expect.objectContaining({ nickname: 'bob', room: 'side', userCount: 1 }),
      );
      expect(left).toContainEqual(
        expect.objectContaining({ nickname: 'bob', room: 'lobby', userCount: 1 }),
      );
    });
  }
});

describe('what a node shows a joiner of the room, from its roster', () => {
  const CAPS = ['rooms', 'history', 'renames', 'errors'];

  it.each(['Ann', 'ann'])(
    'lists a name taken again (from %s) under its new holder’s spelling, and shows the others the handover',
    async (earlier) => {
      const { a, b, handlers } = interruptibleNodes();
      // The earlier holder is in the lobby before node a reads it: a's roster knows her from
      // that read.
      const first = connect(b, earlier);
      await settle();
      const wit = connect(a, 'wit', CAPS);
      await settle();
      wit.take();
      // Presence frees the name before her leave is published; node a gets it late.
      const late = holdBack(handlers[0]!, 'left');
      send(first, { cmd: '3' });
      await settle();
      // Another client, another connection, takes the freed name on node a.
      const ann = connect(a, 'ann', CAPS);
      await settle();
      late.release();
      await settle();
      const list = ann.take().find((m) => m.cmd === '101') as { members: string[] };
      expect(list.members).toEqual(['wit', 'ann']);
      // wit is shown her leaving, and the new "ann" joining, as on one process.
      expect(wit.take()).toEqual([
        { cmd: '30', nickname: earlier, userCount: 1, room: 'lobby' },
        { cmd: '8', nickname: 'ann', userCount: 2, room: 'lobby' },
      ]);
    },
  );

  it('counts a joiner whose own join has not come back yet in the events shown to it meanwhile', async () => {
    const { a, b, handlers } = interruptibleNodes();
    const bob = connect(b, 'bob');
    const cat = connect(b, 'cat');
    await settle();
    const ann = connect(a, 'ann', CAPS);
    await settle();
    ann.take();
    // Joins reach node a late (a catch-up holds them): jo's own among them.
    const late = holdBack(handlers[0]!, 'joined');
    const jo = connect(a, 'jo', CAPS);
    await settle();
    const list = jo.take().find((m) => m.cmd === '101') as { members: string[] };
    expect(list.members).toEqual(['bob', 'cat', 'ann', 'jo']);
    send(bob, { cmd: '3' });
    await settle();
    // jo was shown itself among four: three are left. ann has not been shown jo yet: two.
    expect(jo.take()).toContainEqual({ cmd: '30', nickname: 'bob', userCount: 3, room: 'lobby' });
    expect(ann.take()).toContainEqual({ cmd: '30', nickname: 'bob', userCount: 2, room: 'lobby' });
    late.release();
    await settle();
    expect(ann.take()).toContainEqual({ cmd: '8', nickname: 'jo', userCount: 3, room: 'lobby' });
    send(cat, { cmd: '3' });
    await settle();
    expect(jo.take()).toContainEqual({ cmd: '30', nickname: 'cat', userCount: 2, room: 'lobby' });
  });

  it('counts a joiner in by who it is, not by a name it had or another member took', async () => {
    // A read of the room waits, as after a real resync (a few heartbeats).
    const { a, b, handlers } = interruptibleNodes(60_000);
    const bob = connect(b, 'bob');
    connect(b, 'cat');
    await settle();
    const ann = connect(a, 'ann', CAPS);
    const mo = connect(a, 'mo', CAPS);
    await settle();
    // Node a catches the lobby up: every event but chats reaches it late, in order.
    const late = holdBack(handlers[0]!, 'left');
    const renames = holdBack(handlers[0]!, 'renamed');
    const joins = holdBack(handlers[0]!, 'joined');
    send(bob, { cmd: '3' });
    await settle();
    const jo = connect(a, 'jo', CAPS);
    await settle();
    const list = jo.take().find((m) => m.cmd === '101') as { members: string[] };
    expect(list.members).toEqual(['bob', 'cat', 'ann', 'mo', 'jo']);
    // jo becomes jay, and mo takes the name it freed, before any of it comes back.
    send(jo, { cmd: '5', newNickname: 'jay' });
    await settle();
    send(mo, { cmd: '5', newNickname: 'jo' });
    await settle();
    for (const p of [ann, mo, jo]) p.take();
    late.release();
    await settle();
    const bobLeft = (p: FakePeer) => p.take().find((m) => m.cmd === '30' && m.nickname === 'bob');
    // mo was shown bob, cat, ann and mo: three are left. jo (jay now) was shown five: four.
    expect(bobLeft(mo)).toMatchObject({ userCount: 3 });
    expect(bobLeft(jo)).toMatchObject({ userCount: 4 });
    joins.release();
    renames.release();
  });

  it('reads a room again a whole delay after its subscription came back, though a read was due sooner', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const { a, handlers, presences } = interruptibleNodes(3_000);
      connect(a, 'obs');
      await settle();
      let reads = 0;
      const members = presences[0]!.members.bind(presences[0]);
      presences[0]!.members = (room) => {
        reads++;
        return members(room);
      };
      // A joiner's read disagreed with the roster: the room is to be read in 3 s.
      handlers[0]!.resync!(a.lobby.key, 'publish');
      vi.advanceTimersByTime(2_000);
      // The subscription was down (Redis restarted) and is back: the other nodes register
      // their members again within the delay, and a read before that shows them leaving.
      handlers[0]!.resync!(a.lobby.key, 'subscription');
      vi.advanceTimersByTime(2_000);
      await settle();
      expect(reads).toBe(0);
      vi.advanceTimersByTime(1_000);
      await settle();
      expect(reads).toBe(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it('shows a late leave once, though two joiners had the room read again before it came', async () => {
    const { a, b, handlers } = interruptibleNodes();
    const ann = connect(b, 'ann');
    const bob = connect(b, 'bob');
    await settle();
    const obs = connect(a, 'obs');
    await settle();
    obs.take();
    // Node b's leaves reach node a late (a slow PUBLISH).
    const late = holdBack(handlers[0]!, 'left');
    send(ann, { cmd: '3' });
    await settle();
    // A joiner on a whose read lacks ann, whom the roster has: the room is read again.
    connect(a, 'h1', CAPS);
    await settle();
    send(bob, { cmd: '3' });
    await settle();
    // Another, whose read lacks bob: read again, before ann's leave has come.
    connect(a, 'h2', CAPS);
    await settle();
    expect(late.release()).toBe(2);
    await settle();
    const leaves = obs.take().filter((m) => m.cmd === '30');
    expect(leaves.map((m) => (m as { nickname: string }).nickname)).toEqual(['ann', 'bob']);
  });

  it('is trusted again after it had to forget a member, once a joiner read the room', async () => {
    const { a, b, handlers } = interruptibleNodes();
    connect(b, 'ann');
    connect(b, 'bob');
    await settle();
    const obs = connect(a, 'obs');
    await settle();
    // A reload lowers --max-users on node a for a while: the roster forgets a member.
    a.reconfigure({ maxUsers: 1 });
    connect(b, 'cy');
    await settle();
    a.reconfigure({ maxUsers: 10 });
    obs.take();
    connect(a, 'h1', CAPS);
    await settle();
    // A join on b whose event reaches a late, while eve joins on a.
    const room = handlers[0]!.room.bind(handlers[0]);
    const late: [string, RoomEvent][] = [];
    handlers[0]!.room = (key, event) => {
      if (event.type === 'joined' && event.nickname === 'dan') late.push([key, event]);
      else room(key, event);
    };
    connect(b, 'dan');
    await settle();
    const eve = connect(a, 'eve', ['rooms', 'errors']);
    await settle();
    for (const [key, event] of late) room(key, event);
    await settle();
    const got = eve.take();
    const welcome = got.find((m) => m.cmd === '03') as { userCount: number };
    const dan = got.filter((m) => m.cmd === '8');
    // Counted once: in the welcome's count, or announced after it with one more.
    expect(welcome.userCount + dan.length).toBe(7);
    for (const m of dan) expect(m).toMatchObject({ nickname: 'dan', userCount: 7 });
  });

  it('shows a course client the leave of a member after its node lowered --max-users below the lobby', async () => {
    const [a, b] = nodes(2, { maxUsers: 10 });
    const ann = connect(b!, 'ann');
    connect(b!, 'bob');
    await settle();
    const obs = connect(a!, 'obs');
    await settle();
    obs.take();
    // A reload of node a only (nodes reload one by one): its lobby is over capacity now, and
    // its roster holds at most twice that.
    a!.reconfigure({ maxUsers: 1 });
    connect(b!, 'cy');
    await settle();
    expect(obs.take()).toEqual([{ cmd: '8', nickname: 'cy', userCount: 4 }]);
    send(ann, { cmd: '3' });
    await settle();
    expect(obs.take()).toEqual([{ cmd: '30', nickname: 'ann', userCount: 3 }]);
  });

  it('tells a room of a join a member was closed in the middle of before its leave, never the leave alone', async () => {
    const [a, b] = nodes(2, { maxUsers: 10 });
    const wit = connect(a!, 'wit', EXT);
    const ann = connect(b!, 'ann', EXT);
    await settle();
    send(wit, { cmd: '100', room: 'physics' });
    await settle();
    wit.take();
    // Ann's place in physics is claimed, and her node reads the room's members when she is
    // closed (a KICK, a ban, a stall).
    const presence = b!.cluster!.presence;
    const members = holding(presence.members.bind(presence));
    presence.members = members.call;
    send(ann, { cmd: '100', room: 'physics' });
    await settle();
    expect(members.held).toHaveLength(1);
    b!.disconnect(ann.session!, 'flooding');
    await settle();
    members.release();
    await settle();
    expect(wit.take().filter((m) => 'room' in m && m.room === 'physics')).toEqual([
      { cmd: '8', nickname: 'ann', userCount: 2, room: 'physics' },
      { cmd: '30', nickname: 'ann', userCount: 1, room: 'physics' },
    ]);
  });

  it('shows a later joiner, and the members there before it, a member the first read missed, then its leave', async () => {
    const [a, b] = nodes(2, { maxUsers: 10 });
    const ann = connect(b!, 'ann');
    await settle();
    // After a Redis restart, another node registers its members again only at its next
    // heartbeat, with no room event: node a's first read of the lobby misses ann.
    const presence = a!.cluster!.presence;
    const members = presence.members.bind(presence);
    let lagging = true;
    presence.members = async (room) =>
      (await members(room)).filter((m) => !lagging || m.nickname !== 'ann');
    const wit = connect(a!, 'wit', CAPS);
    await settle();
    lagging = false;
    wit.take();
    const hist = connect(a!, 'hist', CAPS);
    await settle();
    // Its own read disagrees with the roster: the room is read again, and ann shown joining,
    // once, to whoever was not shown her.
    const entered = hist.take();
    const list = entered.find((m) => m.cmd === '101') as { members: string[] };
    expect(list.members).toEqual(['wit', 'hist']);
    expect(entered.filter((m) => m.cmd === '8')).toEqual([
      { cmd: '8', nickname: 'ann', userCount: 3, room: 'lobby' },
    ]);
    expect(wit.take()).toEqual([
      { cmd: '8', nickname: 'hist', userCount: 2, room: 'lobby' },
      { cmd: '8', nickname: 'ann', userCount: 3, room: 'lobby' },
    ]);
    send(ann, { cmd: '3' });
    await settle();
    for (const member of [hist, wit]) {
      expect(member.take()).toEqual([{ cmd: '30', nickname: 'ann', userCount: 2, room: 'lobby' }]);
    }
  });
});
