/**
 * The Broker contract (src/core/broker.ts) as vitest tests, for any implementation:
 * call `brokerContract` with a target that makes clusters of nodes sharing one history.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type {
  Broker,
  BrokerHandler,
  ChatPlace,
  JoinedEvent,
  LostReason,
  NodeNotice,
  ResyncCause,
  RoomEvent,
  RoomRef,
  WhisperEvent,
} from '../../src/core/broker.js';
import type { HistoryStore } from '../../src/core/history.js';
import { senderOrigin } from '../../src/store/common.js';

/** One node: its broker, and the history store it appends chats to (shared storage). */
export interface BrokerNode {
  readonly broker: Broker;
  readonly history: HistoryStore;
}

/** Nodes that share one history and see each other's events. */
export interface BrokerCluster {
  node(): Promise<BrokerNode>;
  dispose(): Promise<void>;
}

export interface BrokerTarget {
  readonly name: string;
  cluster(): Promise<BrokerCluster>;
}

/** Records what a node's broker hands back. */
export class Recorder implements BrokerHandler {
  readonly events: { key: string; event: RoomEvent }[] = [];
  readonly whispers: WhisperEvent[] = [];
  readonly lostRooms: { key: string; reason: LostReason; epoch: string }[] = [];
  readonly resyncs: string[] = [];
  /** Why each of `resyncs` came. */
  readonly resyncCauses: ResyncCause[] = [];
  readonly notices: NodeNotice[] = [];
  readonly placements: { key: string; nickname: string; after: ChatPlace }[] = [];
  /** Own joins whose PUBLISH failed: `key nickname`. */
  readonly unplacedJoins: string[] = [];
  /** Own joins placed and unplaced, in the order told: `placed nickname`, `unplaced nickname`. */
  readonly joinsTold: string[] = [];

  room(key: string, event: RoomEvent): void {
    this.events.push({ key, event });
  }
  whisper(event: WhisperEvent): void {
    this.whispers.push(event);
  }
  lost(key: string, reason: LostReason, epoch: string): void {
    this.lostRooms.push({ key, reason, epoch });
  }
  resync(key: string, missed: ResyncCause): void {
    this.resyncs.push(key);
    this.resyncCauses.push(missed);
  }
  notice(notice: NodeNotice): void {
    this.notices.push(notice);
  }
  placed(key: string, event: JoinedEvent, after: ChatPlace): void {
    this.placements.push({ key, nickname: event.nickname, after });
    this.joinsTold.push(`placed ${event.nickname}`);
  }
  unplaced(key: string, event: JoinedEvent): void {
    this.unplacedJoins.push(`${key} ${event.nickname}`);
    this.joinsTold.push(`unplaced ${event.nickname}`);
  }

  of(key: string): RoomEvent[] {
    return this.events.filter((e) => e.key === key).map((e) => e.event);
  }
  chatIds(key: string): number[] {
    return this.of(key).flatMap((e) => (e.type === 'chat' ? [e.id] : []));
  }
}

export interface Node extends BrokerNode {
  readonly got: Recorder;
}

const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Waits (bounded) until `check` passes. */
export function eventually(check: () => void | Promise<void>): Promise<void> {
  return vi.waitFor(check, { timeout: 10_000, interval: 5 });
}

/**
 * Stores a chat, then hands it to the node's broker with its epoch, as Chat.say does; with
 * `sender`, as on a cluster, the chat carries its origin (senderOrigin, as the server's).
 */
export async function say(
  node: BrokerNode,
  room: RoomRef,
  from: string,
  msg: string,
  sender?: string,
) {
  const draft = sender === undefined ? { at: 1_000, from, msg } : { at: 1_000, from, msg, sender };
  const appended = await node.history.append(room.key, draft);
  const m = appended.message;
  const epoch = appended.epoch;
  // As the core makes it: a chat carries the epoch its id is of.
  const chat = { type: 'chat', room: room.name, id: m.id, at: m.at, from: m.from, msg: m.msg };
  const event = sender === undefined ? chat : { ...chat, origin: senderOrigin(sender) };
  node.broker.publish(room.key, { ...event, epoch } as RoomEvent, epoch);
  return { ...m, epoch };
}

export function joined(room: RoomRef, nickname: string): RoomEvent {
  return { type: 'joined', room: room.name, nickname, count: 1 };
}

export function whisperTo(to: string, msg: string): WhisperEvent {
  return { type: 'whisper', at: 1, from: 'ann', to, msg };
}

/** Makes a cluster per test and closes it after; `node()` returns a node with a recorder. */
export function useCluster(target: BrokerTarget) {
  const open: BrokerCluster[] = [];
  afterEach(async () => {
    for (const cluster of open.splice(0)) await cluster.dispose();
  });
  return async () => {
    const cluster = await target.cluster();
    open.push(cluster);
    return {
      async node(): Promise<Node> {
        const n = await cluster.node();
        const got = new Recorder();
        n.broker.onEvent(got);
        await n.broker.start();
        return { ...n, got };
      },
    };
  };
}

export function brokerContract(target: BrokerTarget): void {
  describe(`Broker contract: ${target.name}`, () => {
    const cluster = useCluster(target);

    it('calls inEpoch back at once within the epoch it hands over, and for a room it does not', async () => {
      const c = await cluster();
      const a = await c.node();
      a.broker.onEvent(new Recorder());
      await a.broker.start();
      const room = { key: 'acks', name: 'acks' };
      await a.broker.subscribe(room);
      const m = await say(a, room, 'ann', 'hi');
      const { epoch } = await a.history.room(room.key);
      const calls: string[] = [];
      a.broker.inEpoch(room.key, epoch, () => calls.push(`acks ${m.id}`));
      a.broker.inEpoch('elsewhere', 'any epoch', () => calls.push('elsewhere'));
      expect(calls).toEqual(['acks 1', 'elsewhere']);
    });

    it('hands room events to subscribed nodes only, under each node’s name for the room', async () => {
      const c = await cluster();
      const [a, b, far] = [await c.node(), await c.node(), await c.node()];
      const atA = { key: 'cafe', name: 'Café' };
      const atB = { key: 'cafe', name: 'cafe' };
      const other = { key: 'other', name: 'other' };
      await a.broker.subscribe(atA);
      await b.broker.subscribe(atB);
      await a.broker.subscribe(other);
      await far.broker.subscribe(other);

      a.broker.publish(atA.key, joined(atA, 'ann'));
      // The publishing node has its own event at once.
      expect(a.got.of('cafe')).toEqual([joined(atA, 'ann')]);
      // Events from two nodes have no order between them until one has seen the other's.
      await eventually(() => expect(b.got.of('cafe')).toEqual([joined(atB, 'ann')]));
      const { epoch } = await say(b, atB, 'bob', 'hello');
      await eventually(() => expect(a.got.chatIds('cafe')).toEqual([1]));
      await eventually(() => expect(b.got.of('cafe')).toHaveLength(2));
      expect(b.got.of('cafe')).toEqual([
        joined(atB, 'ann'),
        { type: 'chat', room: 'cafe', id: 1, at: 1_000, from: 'bob', msg: 'hello', epoch },
      ]);
      expect(a.got.of('cafe')[1]).toMatchObject({ room: 'Café', id: 1, msg: 'hello' });

      // Published after the others: once it is in, theirs would have been.
      a.broker.publish(other.key, joined(other, 'sentinel'));
      await eventually(() => expect(far.got.events).toHaveLength(1));
      expect(far.got.events).toEqual([{ key: 'other', event: joined(other, 'sentinel') }]);
      expect(a.got.of('other')).toEqual([joined(other, 'sentinel')]);
      expect(b.got.of('other')).toEqual([]);
    });

    it("hands a node's own joins back in their place among the room's chats", async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const room = { key: 'lounge', name: 'Lounge' };
      await a.broker.subscribe(room);
      await b.broker.subscribe({ key: 'lounge', name: 'lounge' });
      a.broker.publish(room.key, joined(room, 'first'));
      await eventually(() => expect(a.got.placements).toHaveLength(1));
      expect(a.got.placements[0]).toMatchObject({
        key: 'lounge',
        nickname: 'first',
        after: { id: 0 },
      });
      await say(b, room, 'bob', 'one');
      await say(b, room, 'bob', 'two');
      // Published after those two were stored, whether or not this node has received them
      // yet: placed after them (a chat stored once it is placed comes after it).
      a.broker.publish(room.key, joined(room, 'second'));
      await eventually(() => expect(a.got.placements).toHaveLength(2));
      await say(b, room, 'bob', 'three');
      b.broker.publish(room.key, joined(room, 'elsewhere'));
      await eventually(() => expect(a.got.chatIds('lounge')).toEqual([1, 2, 3]));
      expect(a.got.placements[1]).toMatchObject({
        key: 'lounge',
        nickname: 'second',
        after: { id: 2 },
      });
      // Other nodes' joins are theirs to place.
      await eventually(() => expect(a.got.of('lounge')).toContainEqual(joined(room, 'elsewhere')));
      expect(a.got.placements).toHaveLength(2);
      expect(b.got.placements.map((p) => p.nickname)).toEqual(['elsewhere']);
    });

    it('hands over chats in id order, each once, while two nodes publish at once', async () => {
      const c = await cluster();
      const nodes = [await c.node(), await c.node(), await c.node()];
      const room = { key: 'busy', name: 'busy' };
      for (const n of nodes) await n.broker.subscribe(room);
      const perNode = 150;
      const publishers = nodes.slice(0, 2);
      await Promise.all(
        publishers.map(async (node, p) => {
          for (let i = 0; i < perNode; i += 10) {
            await Promise.all(range(i, i + 9).map((j) => say(node, room, `n${p}`, `${p}:${j}`)));
            // Joins between the chats travel on the same channel.
            node.broker.publish(room.key, joined(room, `n${p}-${i}`));
          }
        }),
      );
      const total = 2 * perNode;
      for (const n of nodes) {
        await eventually(() => expect(n.got.chatIds('busy')).toHaveLength(total));
        expect(n.got.chatIds('busy')).toEqual(range(1, total));
      }
      const stored = await nodes[0]!.history.read('busy', { after: 0, limit: total });
      const { epoch } = await nodes[0]!.history.room('busy');
      const asEvents = stored.map((m) => ({
        type: 'chat',
        room: 'busy',
        id: m.id,
        at: m.at,
        from: m.from,
        msg: m.msg,
        epoch,
      }));
      for (const n of nodes) {
        expect(n.got.of('busy').filter((e) => e.type === 'chat')).toEqual(asEvents);
        await eventually(() =>
          expect(n.got.of('busy').filter((e) => e.type === 'joined')).toHaveLength(total / 10),
        );
        expect(n.got.lostRooms).toEqual([]);
      }
    });

    it('hands a chat over with its origin to every node, its own included', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const room = { key: 'origins', name: 'origins' };
      for (const n of [a, b]) await n.broker.subscribe(room);
      await say(a, room, 'ann', 'one', 'S1');
      await say(b, room, 'bob', 'two', 'S2');
      await say(a, room, 'ann', 'three');
      const origins = [senderOrigin('S1'), senderOrigin('S2'), undefined];
      for (const n of [a, b]) {
        await eventually(() => expect(n.got.chatIds('origins')).toEqual([1, 2, 3]));
        const chats = n.got.of('origins').filter((e) => e.type === 'chat');
        expect(chats.map((e) => e.origin)).toEqual(origins);
      }
    });

    it('hands over the chats after the top the room had when subscribe resolved', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const room = { key: 'late', name: 'late' };
      await a.broker.subscribe(room);
      for (const m of ['one', 'two', 'three']) await say(a, room, 'ann', m);
      await b.broker.subscribe(room);
      await say(a, room, 'ann', 'four');
      await say(b, room, 'bob', 'five');
      await eventually(() => expect(b.got.chatIds('late')).toEqual([4, 5]));
      await eventually(() => expect(a.got.chatIds('late')).toEqual([1, 2, 3, 4, 5]));
    });

    it('stops handing over a room once unsubscribed, and starts again on subscribe', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const room = { key: 'r', name: 'r' };
      const sentinel = { key: 's', name: 's' };
      for (const n of [a, b]) {
        await n.broker.subscribe(room);
        await n.broker.subscribe(sentinel);
      }
      await say(a, room, 'ann', 'before');
      await eventually(() => expect(b.got.chatIds('r')).toEqual([1]));
      await b.broker.unsubscribe('r');
      await say(a, room, 'ann', 'after');
      a.broker.publish(room.key, joined(room, 'carl'));
      b.broker.publish(room.key, joined(room, 'own, unsubscribed'));
      a.broker.publish(sentinel.key, joined(sentinel, 'end'));
      await eventually(() => expect(b.got.of('s')).toEqual([joined(sentinel, 'end')]));
      expect(b.got.of('r')).toHaveLength(1);
      expect(a.got.chatIds('r')).toEqual([1, 2]);

      await b.broker.subscribe(room);
      await say(a, room, 'ann', 'again');
      await eventually(() => expect(b.got.chatIds('r')).toEqual([1, 3]));
    });

    it('takes a whisper to the node it names, and only there', async () => {
      const c = await cluster();
      const [a, b, other] = [await c.node(), await c.node(), await c.node()];
      a.broker.whisper(b.broker.node, whisperTo('bob', 'psst'));
      a.broker.whisper(a.broker.node, whisperTo('ann', 'note to self'));
      expect(a.got.whispers).toEqual([whisperTo('ann', 'note to self')]);
      a.broker.whisper(other.broker.node, whisperTo('otto', 'last'));
      await eventually(() => expect(other.got.whispers).toHaveLength(1));
      await eventually(() => expect(b.got.whispers).toHaveLength(1));
      expect(b.got.whispers).toEqual([whisperTo('bob', 'psst')]);
      expect(other.got.whispers).toEqual([whisperTo('otto', 'last')]);
      expect(a.got.whispers).toHaveLength(1);
      expect([a, b, other].flatMap((n) => n.got.events)).toEqual([]);
      expect(new Set([a, b, other].map((n) => n.broker.node)).size).toBe(3);
    });

    it('resolves a whisper once it is sent, and rejects one a closed broker cannot send', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      await expect(a.broker.whisper(b.broker.node, whisperTo('bob', 'sent'))).resolves.toBe(true);
      await expect(a.broker.whisper(a.broker.node, whisperTo('ann', 'own'))).resolves.toBe(true);
      await eventually(() => expect(b.got.whispers).toEqual([whisperTo('bob', 'sent')]));
      await a.broker.close();
      await expect(a.broker.whisper(b.broker.node, whisperTo('bob', 'late'))).rejects.toThrow();
    });

    it('says a whisper was taken by nobody when no node has the address it names', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      await expect(a.broker.whisper('no-such-node', whisperTo('zed', 'nobody'))).resolves.toBe(
        false,
      );
      const gone = b.broker.node;
      await b.broker.close();
      await expect(a.broker.whisper(gone, whisperTo('bob', 'too late'))).resolves.toBe(false);
      expect(b.got.whispers).toEqual([]);
    });

    it('takes a notice to the node it names, or to every other node', async () => {
      const c = await cluster();
      const [a, b, other] = [await c.node(), await c.node(), await c.node()];
      const remove: NodeNotice = {
        type: 'remove',
        member: '7',
        action: 'kick',
        by: 'op',
        reason: 'spam',
        seconds: undefined,
      };
      const banned: NodeNotice = {
        type: 'banned',
        ban: { mask: 'eve', by: 'op', reason: '', expires: null },
        seconds: undefined,
      };
      await expect(
        a.broker.notify(a.broker.node, { type: 'unbanned', mask: 'self' }),
      ).resolves.toBe(true);
      expect(a.got.notices).toEqual([{ type: 'unbanned', mask: 'self' }]);
      await expect(a.broker.notify(b.broker.node, remove)).resolves.toBe(true);
      await expect(a.broker.notify(undefined, banned)).resolves.toBe(true);
      await eventually(() => expect(other.got.notices).toHaveLength(1));
      await eventually(() => expect(b.got.notices).toHaveLength(2));
      // Over Redis an undefined field is left out: compare as JSON.
      const json = (value: unknown): unknown => JSON.parse(JSON.stringify(value));
      expect(json(b.got.notices)).toEqual(json([remove, banned]));
      expect(json(other.got.notices)).toEqual(json([banned]));
      expect(a.got.notices).toHaveLength(1);
      expect([a, b, other].flatMap((n) => [...n.got.events, ...n.got.whispers])).toEqual([]);
    });

    it('takes every type of notice to another node', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const asker = { node: a.broker.node, member: '3', nickname: 'ann' };
      // One of each: a type a node does not pass on would be lost while Redis says delivered.
      const every: { [T in NodeNotice['type']]: Extract<NodeNotice, { type: T }> } = {
        remove: { type: 'remove', member: '7', action: 'kick', by: 'op', reason: '', seconds: 60 },
        banned: {
          type: 'banned',
          ban: { mask: 'eve', by: 'op', reason: '', expires: null },
          seconds: 60,
        },
        unbanned: { type: 'unbanned', mask: 'eve' },
        evict: { type: 'evict', member: '7' },
        missed: { type: 'missed', asker },
        unheard: { type: 'unheard', asker, lost: true },
        kicked: { type: 'kicked', asker, room: 'lobby', nickname: 'eve', by: 'op', reason: '' },
      };
      for (const notice of Object.values(every)) {
        await expect(b.broker.notify(a.broker.node, notice)).resolves.toBe(true);
      }
      await eventually(() => expect(a.got.notices).toHaveLength(Object.keys(every).length));
      expect(a.got.notices).toEqual(Object.values(every));
    });

    it('says a notice was taken by nobody when no node has the address it names', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const notice: NodeNotice = { type: 'unbanned', mask: 'zed' };
      await expect(a.broker.notify('no-such-node', notice)).resolves.toBe(false);
      const gone = b.broker.node;
      await b.broker.close();
      await expect(a.broker.notify(gone, notice)).resolves.toBe(false);
      expect(b.got.notices).toEqual([]);
      // A closed broker sends nothing, and says it does not know: it never rejects.
      await a.broker.close();
      await expect(a.broker.notify(gone, notice)).resolves.toBeUndefined();
    });

    it('lets a handler unsubscribe while it is being handed an event', async () => {
      const c = await cluster();
      const [a, b] = [await c.node(), await c.node()];
      const room = { key: 'x', name: 'x' };
      await a.broker.subscribe(room);
      await b.broker.subscribe(room);
      let seen = 0;
      b.broker.onEvent({
        room: () => {
          seen++;
          void b.broker.unsubscribe('x');
        },
        whisper: () => {},
      });
      for (const m of ['1', '2', '3']) await say(a, room, 'ann', m);
      await eventually(() => expect(a.got.chatIds('x')).toEqual([1, 2, 3]));
      await eventually(() => expect(seen).toBe(1));
      await b.broker.subscribe(room);
      await say(a, room, 'ann', '4');
      await eventually(() => expect(seen).toBe(2));
    });
  });
}
