/**
 * The Presence contract (src/core/presence.ts) as vitest tests, for any
 * implementation: call `presenceContract` inside a test file with a target
 * whose clusters make nodes that share one state.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  type DeadNode,
  lineageOf,
  MemberGone,
  type Presence,
  PresenceKeeper,
  type PresenceMember,
} from '../../src/core/presence.js';
import { newSender, newToken } from '../../src/core/resume-token.js';

export interface PresenceCluster {
  /** A new node of this cluster (registered by its first heartbeat). */
  node(options: { readonly timeoutMs: number; readonly node?: string }): Presence;
  dispose(): Promise<void> | void;
}

export interface PresenceTarget {
  readonly name: string;
  /** A new, empty cluster. */
  cluster(): PresenceCluster;
}

export const HEARTBEAT_MS = 100;
export const TIMEOUT_MS = 500;
/** Generous: what "within the timeout" may take on a loaded machine. */
export const BOUND_MS = 10_000;

const addr = (port: number) => ({ ip: '127.0.0.1', port });

/** Polls `check` until it returns true, for at most `bound` ms. */
export async function eventually(check: () => boolean | Promise<boolean>, bound = BOUND_MS) {
  const deadline = Date.now() + bound;
  for (let i = 0; i < 10_000; i++) {
    if (await check()) return;
    if (Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`not within ${bound} ms`);
}

const names = (members: readonly PresenceMember[]) => members.map((m) => m.nickname);

export function presenceContract(target: PresenceTarget): void {
  describe(`Presence contract: ${target.name}`, () => {
    const cleanup: (() => unknown)[] = [];
    afterEach(async () => {
      for (const fn of cleanup.splice(0).reverse()) await fn();
    });

    /**
     * `count` registered nodes of a new cluster, closed after the test; each with `timeoutMs`,
     * or node i with `timeoutMs(i)`.
     */
    async function setup(count: number, timeoutMs: number | ((i: number) => number) = TIMEOUT_MS) {
      const cluster = target.cluster();
      cleanup.push(() => cluster.dispose());
      const nodes: Presence[] = [];
      for (let i = 0; i < count; i++) {
        const timeout = typeof timeoutMs === 'number' ? timeoutMs : timeoutMs(i);
        const node = cluster.node({ timeoutMs: timeout, node: `node${i}` });
        cleanup.push(() => node.close().catch(() => {}));
        expect(await node.heartbeat()).toEqual({ status: 'ok' });
        nodes.push(node);
      }
      return { cluster, nodes };
    }

    it('gives a nickname to one claim only, by its look-alike key', async () => {
      const {
        nodes: [a],
      } = await setup(1);
      expect(await a!.claim('1', 'Ann', addr(1))).toBe(true);
      expect(await a!.claim('2', 'Ann', addr(2))).toBe(false);
      // Case, fullwidth and a Cyrillic "а" are the same name.
      expect(await a!.claim('3', 'aNN', addr(3))).toBe(false);
      expect(await a!.claim('4', '\uFF21nn', addr(4))).toBe(false);
      expect(await a!.claim('5', '\u0430nn', addr(5))).toBe(false);
      expect(await a!.find('ann')).toEqual({
        node: a!.node,
        id: '1',
        nickname: 'Ann',
        address: addr(1),
      });
      expect(await a!.find('bob')).toBeUndefined();
      // Concurrent claims in one turn: one winner.
      const racing = await Promise.all(
        ['10', '11', '12', '13'].map((id) => a!.claim(id, 'Bob', addr(9))),
      );
      expect(racing.filter(Boolean)).toHaveLength(1);
      await expect(a!.claim('1', 'Other', addr(1))).rejects.toThrow(/already registered/);
      await expect(a!.claim('x:y', 'Other', addr(1))).rejects.toThrow(RangeError);
      await expect(a!.claim('6', 'bad\uD800', addr(1))).rejects.toThrow(RangeError);
    });

    it('renames atomically: a taken name fails and keeps the old one', async () => {
      const {
        nodes: [a, b],
      } = await setup(2);
      expect(await a!.claim('1', 'ann', addr(1))).toBe(true);
      expect(await b!.claim('1', 'bob', addr(2))).toBe(true);
      expect(await a!.rename('1', 'BOB')).toBe(false);
      expect((await a!.find('ann'))?.id).toBe('1');
      expect((await a!.find('bob'))?.node).toBe(b!.node);
      // Another spelling of one's own name.
      expect(await a!.rename('1', 'Ann')).toBe(true);
      expect((await b!.find('ann'))?.nickname).toBe('Ann');
      expect(await a!.rename('1', 'carol')).toBe(true);
      expect((await b!.find('carol'))?.id).toBe('1');
      // The old name is free.
      expect(await b!.claim('2', 'ann', addr(3))).toBe(true);
      // Two renames racing for one name: one wins, the loser keeps its name.
      const [x, y] = await Promise.all([a!.rename('1', 'dave'), b!.rename('1', 'dave')]);
      expect([x, y].filter(Boolean)).toHaveLength(1);
      expect((await a!.find('dave'))?.node).toBe(x ? a!.node : b!.node);
      expect(await a!.find(x ? 'bob' : 'carol')).toBeDefined();
      // A member not registered (a resume took it to another connection): not "taken".
      await expect(a!.rename('nobody', 'erin')).rejects.toThrow(MemberGone);
      expect(await a!.find('erin')).toBeUndefined();
    });

    it('gives the same nickname claimed on two nodes at once to exactly one', async () => {
      const { nodes } = await setup(2);
      for (let round = 0; round < 30; round++) {
        const won = await Promise.all(
          nodes.map((node) => node.claim(`m${round}`, `name${round}`, addr(round))),
        );
        expect(won.filter(Boolean)).toHaveLength(1);
        const holder = await nodes[0]!.find(`name${round}`);
        expect(holder?.node).toBe(nodes[won.indexOf(true)]!.node);
      }
    });

    it('admits exactly the capacity under racing joins from three nodes', async () => {
      const { nodes } = await setup(3);
      for (let n = 0; n < nodes.length; n++) {
        for (let i = 0; i < 20; i++) {
          expect(await nodes[n]!.claim(`m${i}`, `n${n}m${i}`, addr(i))).toBe(true);
        }
      }
      for (let round = 0; round < 20; round++) {
        const room = `room${round}`;
        const results = await Promise.all(
          nodes.flatMap((node) =>
            Array.from({ length: 20 }, (_, i) => node.join(`m${i}`, room, 10)),
          ),
        );
        const admitted = results.filter((r) => r.ok);
        expect(admitted).toHaveLength(10);
        expect(results.filter((r) => !r.ok && r.reason === 'full')).toHaveLength(50);
        // Each admitted join saw a distinct count, 1..10.
        expect(admitted.map((r) => (r.ok ? r.count : 0)).sort((p, q) => p - q)).toEqual(
          Array.from({ length: 10 }, (_, i) => i + 1),
        );
        expect(await nodes[1]!.count(room)).toBe(10);
        expect(await nodes[2]!.members(room)).toHaveLength(10);
      }
    });

    it('frees a place when a member leaves, and lists members in join order', async () => {
      const {
        nodes: [a, b],
      } = await setup(2);
      await a!.claim('1', 'ann', addr(1));
      await b!.claim('1', 'bob', { ip: '::1', port: 2 });
      await a!.claim('2', 'carol', addr(3));
      expect(await a!.join('1', 'lobby', 2)).toEqual({ ok: true, count: 1, name: 'lobby' });
      expect(await b!.join('1', 'lobby', 2)).toEqual({ ok: true, count: 2, name: 'lobby' });
      expect(await a!.join('2', 'lobby', 2)).toEqual({ ok: false, reason: 'full' });
      expect(await a!.join('1', 'lobby', 5)).toEqual({ ok: false, reason: 'already-in' });
      // Each with the lineage of its claim, as its joins carry it.
      expect(await b!.members('lobby')).toEqual([
        {
          node: a!.node,
          id: '1',
          nickname: 'ann',
          address: addr(1),
          lineage: lineageOf(a!.node, '1'),
        },
        {
          node: b!.node,
          id: '1',
          nickname: 'bob',
          address: { ip: '::1', port: 2 },
          lineage: lineageOf(b!.node, '1'),
        },
      ]);
      expect(await a!.leave('1', 'lobby')).toBe(1);
      expect(await a!.leave('1', 'lobby')).toBeUndefined();
      expect(await a!.join('2', 'lobby', 2)).toEqual({ ok: true, count: 2, name: 'lobby' });
      expect(await a!.join('1', 'lobby', 3)).toEqual({ ok: true, count: 3, name: 'lobby' });
      expect(names(await a!.members('lobby'))).toEqual(['bob', 'carol', 'ann']);
      // A rename moves the member to the end, in every room it is in.
      await b!.join('1', 'other', 10);
      await a!.join('2', 'other', 10);
      expect(await b!.rename('1', 'bobby')).toBe(true);
      expect(names(await a!.members('lobby'))).toEqual(['carol', 'ann', 'bobby']);
      expect(names(await a!.members('other'))).toEqual(['carol', 'bobby']);
      // A member of another node cannot be moved from here.
      expect(await a!.leave('1', 'other')).toBeUndefined();
      expect(await a!.count('other')).toBe(2);
      await expect(a!.join('nobody', 'lobby', 10)).rejects.toThrow(/not registered/);
      expect(await a!.members('empty')).toEqual([]);
      expect(await a!.count('empty')).toBe(0);
    });

    it('keeps rooms whose keys differ only in bytes apart', async () => {
      const {
        nodes: [a],
      } = await setup(1);
      await a!.claim('1', 'ann', addr(1));
      await a!.claim('2', 'bob', addr(2));
      const rooms = ['caf\u00e9 {x}', 'cafe\u0301 {x}', 'r:1', 'r', '\u{1F600}'];
      for (const room of rooms) expect(await a!.join('1', room, 10)).toMatchObject({ ok: true });
      expect(await a!.join('2', rooms[1]!, 10)).toEqual({ ok: true, count: 2, name: rooms[1]! });
      expect(await a!.count(rooms[0]!)).toBe(1);
      expect(await a!.count(rooms[1]!)).toBe(2);
      await expect(a!.join('2', 'x\uDC00', 10)).rejects.toThrow(RangeError);
      await expect(a!.count('x\uDC00')).rejects.toThrow(RangeError);
      await expect(a!.members('x\uDC00')).rejects.toThrow(RangeError);
      await expect(a!.find('x\uDC00')).rejects.toThrow(RangeError);
      expect(await a!.release('1')).toEqual(
        rooms.map((room, i) => ({ room, count: i === 1 ? 1 : 0 })),
      );
    });

    it('lists the rooms with the most members first, past its limit too, as members come and go', async () => {
      const { nodes } = await setup(2);
      const [a, b] = nodes as [Presence, Presence];
      for (let i = 1; i <= 6; i++) await (i % 2 === 0 ? a : b).claim(`${i}`, `m${i}`, addr(i));
      const on = (i: number) => (i % 2 === 0 ? a : b);
      const join = (i: number, room: string) => on(i).join(`${i}`, room, 10);
      // Made in this order: r1 (1 member), r2 (3), r3 (1), r4 (2, one of them from r1's).
      await join(1, 'r1');
      for (const i of [2, 3, 4]) await join(i, 'r2');
      await join(5, 'r3');
      await join(6, 'r4');
      await join(1, 'r4');
      const ranked = async (limit: number) =>
        (await a.rooms(limit)).map((r) => `${r.room}:${r.count}`);
      // Of equal counts, the first made first.
      expect(await ranked(10)).toEqual(['r2:3', 'r4:2', 'r1:1', 'r3:1']);
      // Cut at the limit: the most members, not the first made.
      expect(await ranked(2)).toEqual(['r2:3', 'r4:2']);
      expect(await ranked(1)).toEqual(['r2:3']);
      // r4 grows past r2 as r2 shrinks (a leave, then a member gone with all its rooms).
      await join(5, 'r4');
      await on(2).leave('2', 'r2');
      await on(3).release('3');
      expect(await ranked(2)).toEqual(['r4:3', 'r1:1']);
      expect(await ranked(10)).toEqual(['r4:3', 'r1:1', 'r2:1', 'r3:1']);
      // A member moved to another node by its token counts once, where it was.
      await b.grant('1', 'token-1');
      expect(await a.takeOver('token-1', '7', addr(7), 'token-2')).toBeDefined();
      expect(await ranked(2)).toEqual(['r4:3', 'r1:1']);
      // Emptied, a room leaves the ranking too.
      await a.release('7');
      expect(await ranked(2)).toEqual(['r4:2', 'r2:1']);
    });

    it('lists rooms with members on any node, most members first, and counts the cluster', async () => {
      const { nodes } = await setup(3);
      const [a, b, c] = nodes as [Presence, Presence, Presence];
      // A node counts while its last heartbeat is younger than TIMEOUT_MS: each census comes
      // right after one, so a machine stalled for that long between steps expires nobody.
      const census = async (...alive: Presence[]) => {
        for (const node of alive) await node.heartbeat();
        return c.census();
      };
      expect(await c.rooms(10)).toEqual([]);
      expect(await census(a, b, c)).toEqual({ users: 0, nodes: 3 });
      await a.claim('1', 'ann', addr(1));
      await b.claim('1', 'bob', addr(2));
      await b.claim('2', 'bea', addr(3));
      await a.join('1', 'physics', 10, 'Physics');
      await b.join('1', 'lobby', 10);
      // A room keeps the name it was made with, whatever name a later join gives.
      expect(await b.join('1', 'physics', 10, 'PHYSICS')).toEqual({
        ok: true,
        count: 2,
        name: 'Physics',
      });
      await b.join('2', 'maths', 10, 'Maths');
      expect(await c.rooms(10)).toEqual([
        { room: 'physics', name: 'Physics', count: 2 },
        { room: 'lobby', name: 'lobby', count: 1 },
        { room: 'maths', name: 'Maths', count: 1 },
      ]);
      // Bounded: the most members, then the first made.
      expect(await c.rooms(2)).toEqual([
        { room: 'physics', name: 'Physics', count: 2 },
        { room: 'lobby', name: 'lobby', count: 1 },
      ]);
      expect(await census(a, b, c)).toEqual({ users: 3, nodes: 3 });
      // A room goes when its last member leaves; made again, it comes last, under its new name.
      await a.leave('1', 'physics');
      await b.release('1');
      expect(await c.rooms(10)).toEqual([{ room: 'maths', name: 'Maths', count: 1 }]);
      expect(await a.join('1', 'physics', 10, 'physiCS')).toMatchObject({ name: 'physiCS' });
      expect((await c.rooms(10)).map((r) => r.name)).toEqual(['Maths', 'physiCS']);
      expect(await census(a, b, c)).toEqual({ users: 2, nodes: 3 });
      await b.close();
      expect(await c.rooms(10)).toEqual([{ room: 'physics', name: 'physiCS', count: 1 }]);
      expect(await census(a, c)).toEqual({ users: 1, nodes: 2 });
    });

    it('moves a member to another node with its resume token, once, keeping its places', async () => {
      const { nodes } = await setup(2);
      const [a, b] = nodes as [Presence, Presence];
      await a.claim('1', 'ann', addr(1));
      await b.claim('1', 'bob', addr(2));
      await a.join('1', 'lobby', 10);
      await b.join('1', 'lobby', 10);
      await a.join('1', 'physics', 10, 'Physics');
      await a.grant('1', 'old-token');
      await a.grant('1', 'token-1');
      // A replaced token takes nothing over.
      expect(await b.takeOver('old-token', '9', addr(9), 'x')).toBeUndefined();
      expect(await b.takeOver('token-1', '2', addr(3), 'token-2')).toEqual({
        node: a.node,
        id: '1',
        nickname: 'ann',
        lineage: lineageOf(a.node, '1'),
        rooms: [
          { room: 'lobby', name: 'lobby' },
          { room: 'physics', name: 'Physics' },
        ],
      });
      expect(await a.find('ANN')).toEqual({
        node: b.node,
        id: '2',
        nickname: 'ann',
        address: addr(3),
      });
      expect(names(await a.members('lobby'))).toEqual(['ann', 'bob']);
      // Listed with the lineage its joins carry: the claim it descends from, kept.
      expect((await a.members('physics'))[0]?.lineage).toBe(lineageOf(a.node, '1'));
      expect(await a.count('physics')).toBe(1);
      // Once: the token is used up, the new one works, and the old member is gone.
      expect(await a.takeOver('token-1', '3', addr(4), 'y')).toBeUndefined();
      expect(await a.release('1')).toEqual([]);
      expect(await a.takeOver('token-2', '3', addr(4), 'token-3')).toMatchObject({
        node: b.node,
        lineage: lineageOf(a.node, '1'),
      });
      // A released member's token is refused.
      expect(await a.release('3')).toEqual([
        { room: 'lobby', count: 1 },
        { room: 'physics', count: 0 },
      ]);
      expect(await b.takeOver('token-3', '4', addr(5), 'z')).toBeUndefined();
      // Claimed anew (by the same client, say), the member starts another lineage.
      expect(await b.claim('4', 'ann', addr(5))).toBe(true);
      await b.grant('4', 'token-4');
      expect((await a.takeOver('token-4', '5', addr(6), 'token-5'))?.lineage).toBe(
        lineageOf(b.node, '4'),
      );
    });

    it('knows which identities the members hold, on any node, until they go', async () => {
      const { nodes } = await setup(3);
      const [a, b, c] = nodes as [Presence, Presence, Presence];
      for (const [i, node] of nodes.entries()) await node.claim('p', `probe${i}`, addr(90 + i));
      /** Whether a member holds `sender`'s identity: `on`'s probe is refused a token of it. */
      const held = async (on: Presence, sender: string): Promise<boolean> => {
        if (!(await on.grant('p', newToken(sender)))) return true;
        // Granted: given back, with a token that carries no identity.
        await on.grant('p', 'probe-token');
        return false;
      };
      const ann = newSender();
      await a.claim('1', 'ann', addr(1));
      // A token not of the resume-token form carries no identity: any member may have one.
      await a.grant('1', 'token-1');
      expect(await b.grant('p', 'token-2')).toBe(true);
      const t1 = newToken(ann);
      await a.grant('1', t1);
      // Any token carrying ann's identity, spent or made up, is refused alike.
      expect(await held(b, ann)).toBe(true);
      expect(await held(b, newSender())).toBe(false);
      // Moved by a resume whose next token carries it too: still held, after the old token
      // is spent.
      expect(await b.takeOver(t1, '2', addr(2), newToken(ann))).toBeDefined();
      expect(await held(c, ann)).toBe(true);
      // Given a token of another identity, by a grant or a takeover, the member holds that
      // one only.
      const other = newSender();
      const otherToken = newToken(other);
      await b.grant('2', otherToken);
      expect(await held(c, ann)).toBe(false);
      expect(await held(c, other)).toBe(true);
      const third = newSender();
      expect(await c.takeOver(otherToken, '3', addr(3), newToken(third))).toBeDefined();
      expect(await held(a, other)).toBe(false);
      expect(await held(a, third)).toBe(true);
      // Released, or gone with its node: held by nobody.
      await c.release('3');
      expect(await held(a, third)).toBe(false);
      await b.claim('4', 'bob', addr(4));
      const bob = newSender();
      await b.grant('4', newToken(bob));
      expect(await held(a, bob)).toBe(true);
      await b.close();
      expect(await held(a, bob)).toBe(false);
    });

    it('grants a token whose identity another member holds to nobody', async () => {
      const { nodes } = await setup(2);
      const [a, b] = nodes as [Presence, Presence];
      const ann = newSender();
      await a.claim('1', 'one', addr(1));
      await b.claim('2', 'two', addr(2));
      expect(await a.grant('1', newToken(ann))).toBe(true);
      const refused = newToken(ann);
      expect(await b.grant('2', refused)).toBe(false);
      // Nothing changed: the token takes nothing over, and the first keeps the identity.
      expect(await a.takeOver(refused, '3', addr(3), newToken(newSender()))).toBeUndefined();
      // Refused again, also once the refused member went.
      await b.claim('5', 'five', addr(5));
      await b.release('2');
      expect(await b.grant('5', newToken(ann))).toBe(false);
      // Its holder may be granted another token of it, and, once it has gone, anyone.
      expect(await a.grant('1', newToken(ann))).toBe(true);
      await a.release('1');
      await b.claim('4', 'four', addr(4));
      expect(await b.grant('4', newToken(ann))).toBe(true);
    });

    it('keeps through every resume the operator a member proved itself, and only its own', async () => {
      const { nodes } = await setup(2);
      const [a, b] = nodes as [Presence, Presence];
      await a.claim('1', 'ann', addr(1));
      await a.grant('1', 't1');
      await a.operate('1', 'teacher');
      await a.claim('2', 'bob', addr(2));
      await a.grant('2', 'u1');
      // Nothing for a member that is not registered.
      await a.operate('9', 'teacher');
      expect(await b.takeOver('t1', '1', addr(3), 't2')).toMatchObject({ operator: 'teacher' });
      expect(await a.takeOver('t2', '3', addr(4), 't3')).toMatchObject({
        nickname: 'ann',
        operator: 'teacher',
      });
      const bob = await b.takeOver('u1', '2', addr(5), 'u2');
      expect(bob?.nickname).toBe('bob');
      expect(bob?.operator).toBeUndefined();
      expect(await a.takeOver('x', '4', addr(6), 'y')).toBeUndefined();
    });

    it('names in a heartbeat the members a resume took from the node, once', async () => {
      const { nodes } = await setup(2);
      const [a, b] = nodes as [Presence, Presence];
      await a.claim('1', 'ann', addr(1));
      await a.claim('2', 'bob', addr(2));
      await a.claim('3', 'cy', addr(3));
      await a.grant('1', 'token-1');
      await a.grant('3', 'token-3');
      expect(await a.heartbeat()).toEqual({ status: 'ok' });
      // ann goes to b; cy is taken back on a itself; bob leaves.
      await b.takeOver('token-1', '4', addr(4), 'token-4');
      await a.takeOver('token-3', '5', addr(5), 'token-5');
      await a.release('2');
      expect(await a.heartbeat()).toEqual({ status: 'ok', gone: ['1'] });
      expect(await a.heartbeat()).toEqual({ status: 'ok' });
      expect(await b.heartbeat()).toEqual({ status: 'ok' });
      // And back again: b names it too.
      await a.takeOver('token-4', '6', addr(6), 'token-6');
      expect(await b.heartbeat()).toEqual({ status: 'ok', gone: ['4'] });
      expect(await a.heartbeat()).toEqual({ status: 'ok' });
    });

    it('follows a moved member by its identity, never by the nickname it had', async () => {
      const { nodes } = await setup(3);
      const [a, b, c] = nodes as [Presence, Presence, Presence];
      await a.claim('1', 'ann', addr(1));
      await a.grant('1', 'token-1');
      expect(await a.successor(a.node, '1')).toBeUndefined();
      await b.takeOver('token-1', '2', addr(2), 'token-2');
      await c.takeOver('token-2', '3', addr(3), 'token-3');
      // Two moves, followed in one step to where the member is now.
      expect(await a.successor(a.node, '1')).toEqual({
        node: c.node,
        id: '3',
        nickname: 'ann',
        address: addr(3),
      });
      expect((await b.successor(b.node, '2'))?.id).toBe('3');
      expect(await c.successor(c.node, '3')).toBeUndefined();
      // Renamed, it is still found; gone, nothing is, though another member took its name.
      expect(await c.rename('3', 'anna')).toBe(true);
      expect((await a.successor(a.node, '1'))?.nickname).toBe('anna');
      await c.release('3');
      expect(await b.claim('9', 'anna', addr(9))).toBe(true);
      expect(await a.successor(a.node, '1')).toBeUndefined();
      expect(await b.successor(b.node, '2')).toBeUndefined();
      // A member that never moved has no successor, whoever else holds a name.
      expect(await b.successor(b.node, '9')).toBeUndefined();
      expect(await a.successor(a.node, '7')).toBeUndefined();
    });

    it('releases a member: its nickname and places are free, its rooms listed in join order', async () => {
      const {
        nodes: [a, b],
      } = await setup(2);
      await a!.claim('1', 'ann', addr(1));
      await b!.claim('1', 'bob', addr(2));
      await a!.join('1', 'lobby', 10);
      await b!.join('1', 'lobby', 10);
      await a!.join('1', 'zeta', 1);
      await a!.join('1', 'alpha', 10);
      expect(await a!.release('1')).toEqual([
        { room: 'lobby', count: 1 },
        { room: 'zeta', count: 0 },
        { room: 'alpha', count: 0 },
      ]);
      expect(await a!.release('1')).toEqual([]);
      expect(await a!.find('ann')).toBeUndefined();
      expect(await b!.claim('2', 'ANN', addr(3))).toBe(true);
      expect(await b!.join('2', 'zeta', 1)).toEqual({ ok: true, count: 1, name: 'zeta' });
      expect(names(await a!.members('lobby'))).toEqual(['bob']);
      // Another node's member of the same id is untouched.
      expect(await b!.find('bob')).toBeDefined();
    });

    it("answers a member's rooms once, whichever of release and expel asks, heartbeats between", async () => {
      const {
        nodes: [a],
      } = await setup(1);
      await a!.claim('1', 'ann', addr(1));
      await a!.join('1', 'lobby', 10);
      expect(await a!.expel('1')).toEqual([{ room: 'lobby', count: 0 }]);
      expect(await a!.heartbeat()).toEqual({ status: 'ok' });
      // Its leave after the removal finds nothing: the rooms hear of it once.
      expect(await a!.release('1')).toEqual([]);
      expect(await a!.expel('1')).toBeUndefined();
      await a!.claim('2', 'bob', addr(2));
      await a!.join('2', 'lobby', 10);
      expect(await a!.release('2')).toEqual([{ room: 'lobby', count: 0 }]);
      expect(await a!.heartbeat()).toEqual({ status: 'ok' });
      expect(await a!.expel('2')).toBeUndefined();
      expect(await a!.release('2')).toEqual([]);
    });

    it('expels a member only while it is registered, telling so, and its token with it', async () => {
      const { nodes } = await setup(3);
      const [a, b, c] = nodes as [Presence, Presence, Presence];
      await a.claim('1', 'ann', addr(1));
      await a.grant('1', 'token-1');
      // Registered without a room: [] is not "gone".
      expect(await a.expel('1')).toEqual([]);
      expect(await a.expel('1')).toBeUndefined();
      expect(await b.takeOver('token-1', '2', addr(2), 'token-2')).toBeUndefined();
      expect(await a.find('ann')).toBeUndefined();
      await a.claim('3', 'bea', addr(3));
      await a.join('3', 'lobby', 10);
      await a.grant('3', 'token-3');
      expect((await b.takeOver('token-3', '4', addr(4), 'token-4'))?.id).toBe('3');
      // Taken over by another node: this node's id expels nothing there.
      expect(await a.expel('3')).toBeUndefined();
      expect((await c.find('bea'))?.node).toBe(b.node);
      expect(await c.expel('4')).toBeUndefined();
      expect(await b.expel('4')).toEqual([{ room: 'lobby', count: 0 }]);
      expect(await c.takeOver('token-4', '5', addr(5), 'token-5')).toBeUndefined();
      expect(await c.find('bea')).toBeUndefined();
    });

    it('tells the reconnect of a removed member, through any node, why it was removed, once', async () => {
      const { nodes } = await setup(2);
      const [a, b] = nodes as [Presence, Presence];
      await a.claim('1', 'ann', addr(1));
      await a.grant('1', 'token-1');
      const kicked = { action: 'kick', detail: 'kicked by teacher: spam' } as const;
      await a.recordRemoval('token-1', kicked);
      expect(await a.expel('1')).toEqual([]);
      expect(await b.takeOver('token-1', '2', addr(2), 'token-2')).toBeUndefined();
      expect(await b.takeRemoval('token-1')).toEqual(kicked);
      expect(await a.takeRemoval('token-1')).toBeUndefined();
      expect(await b.takeRemoval('token-9')).toBeUndefined();
      // Each token its own: a ban of a second member does not answer for the first.
      const banned = { action: 'ban', detail: 'banned by teacher for 1 hour' } as const;
      await b.recordRemoval('token-3', banned);
      expect(await a.takeRemoval('token-1')).toBeUndefined();
      expect(await a.takeRemoval('token-3')).toEqual(banned);
    });

    it('reaps a node that stops heartbeating, once, and frees all it held', async () => {
      const { nodes } = await setup(3);
      const [a, b, c] = nodes as [Presence, Presence, Presence];
      await a.claim('1', 'ann', addr(1));
      await b.claim('1', 'bob', addr(2));
      await b.claim('2', 'bea', addr(3));
      await c.claim('1', 'cid', addr(4));
      await a.join('1', 'lobby', 4);
      await b.join('1', 'lobby', 4);
      await b.join('2', 'lobby', 4);
      await c.join('1', 'lobby', 4);
      await b.join('2', 'side', 4);

      const reaped: DeadNode[] = [];
      const expired: string[] = [];
      const keepers = nodes.map(
        (node) =>
          new PresenceKeeper(
            node,
            {
              onReaped: (dead) => reaped.push(...dead),
              onExpired: () => expired.push(node.node),
            },
            { intervalMs: HEARTBEAT_MS },
          ),
      );
      for (const keeper of keepers) cleanup.push(() => keeper.stop());
      await Promise.all(keepers.map((keeper) => keeper.start()));
      // b stops heartbeating, as a process killed or frozen does.
      keepers[1]!.stop();

      await eventually(() => reaped.length > 0);
      // A few more rounds of the survivors, then: reported once, by one of them.
      await new Promise((resolve) => setTimeout(resolve, 4 * HEARTBEAT_MS));
      expect(reaped).toEqual([
        {
          node: b.node,
          members: [
            {
              id: '1',
              nickname: 'bob',
              address: addr(2),
              rooms: [{ room: 'lobby', count: 3 }],
              lineage: lineageOf(b.node, '1'),
            },
            {
              id: '2',
              nickname: 'bea',
              address: addr(3),
              rooms: [
                { room: 'lobby', count: 2 },
                { room: 'side', count: 0 },
              ],
              lineage: lineageOf(b.node, '2'),
            },
          ],
        },
      ]);
      expect(names(await a.members('lobby'))).toEqual(['ann', 'cid']);
      expect(await c.claim('2', 'Bob', addr(5))).toBe(true);
      expect(await a.claim('2', 'bea', addr(6))).toBe(true);
      expect(await c.join('2', 'lobby', 4)).toEqual({ ok: true, count: 3, name: 'lobby' });
      expect(expired).toEqual([]);

      // b wakes up: told it was reaped, registered again with nothing, usable again.
      expect(await b.heartbeat()).toEqual({ status: 'expired' });
      expect(await b.heartbeat()).toEqual({ status: 'ok' });
      expect(await b.release('1')).toEqual([]);
      expect((await a.find('bob'))?.node).toBe(c.node);
      expect(await b.claim('3', 'bo', addr(7))).toBe(true);
      // Started again (a keeper that merely ticks again after so long takes it for a pause
      // of its process, past the timeout, and reports the node expired first).
      await keepers[1]!.start();
      expect(expired).toEqual([]);
    });

    it('reaps and counts each node by its own timeout, whichever node asks', async () => {
      const started = Date.now();
      // Timeouts of 0.5, 2 and 4 s.
      const { nodes } = await setup(3, (i) => [1, 4, 8][i]! * TIMEOUT_MS);
      const [quick, reaper, slow] = nodes as [Presence, Presence, Presence];
      await quick.claim('1', 'quin', addr(1));
      await slow.claim('1', 'sam', addr(2));
      // Only the reaper beats from here on.
      const reaped: DeadNode[] = [];
      const round = async () => {
        await reaper.heartbeat();
        reaped.push(...(await reaper.reap()));
      };
      // Before the reaper's own timeout has passed since the others' last heartbeat.
      await eventually(async () => {
        await round();
        return reaped.length > 0;
      }, 3 * TIMEOUT_MS);
      expect(reaped.map((d) => [d.node, d.members.map((m) => m.nickname)])).toEqual([
        [quick.node, ['quin']],
      ]);
      // Past the reaper's timeout, short of slow's: slow is still a live node.
      while (Date.now() < started + 5 * TIMEOUT_MS) {
        await round();
        await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS));
      }
      await round();
      expect(reaped.map((d) => d.node)).toEqual([quick.node]);
      expect(await reaper.census()).toEqual({ users: 1, nodes: 2 });
      expect(await slow.census()).toEqual({ users: 1, nodes: 2 });
      expect((await reaper.find('sam'))?.node).toBe(slow.node);
      await eventually(async () => {
        await round();
        return reaped.length > 1;
      });
      expect(reaped.map((d) => d.node)).toEqual([quick.node, slow.node]);
      expect(Date.now() - started).toBeGreaterThanOrEqual(8 * TIMEOUT_MS);
      expect(await reaper.find('sam')).toBeUndefined();
      expect(await reaper.census()).toEqual({ users: 0, nodes: 1 });
    });

    it('reaps a node of a short timeout on time beside one that beats seldom', async () => {
      // The second beats every 1.5 s, as a node of a 7.5 s timeout may: gaps three times the
      // first one's timeout, which must not be taken for silences of every node once it is dead.
      const { nodes } = await setup(2, (i) => [1, 15][i]! * TIMEOUT_MS);
      const [quick, seldom] = nodes as [Presence, Presence];
      await quick.claim('1', 'quin', addr(1));
      const reaped: DeadNode[] = [];
      let beats = 0;
      while (beats < 4 && reaped.length === 0) {
        await new Promise((resolve) => setTimeout(resolve, 3 * TIMEOUT_MS));
        beats++;
        await seldom.heartbeat();
        reaped.push(...(await seldom.reap()));
      }
      // The first beat may take its death for a stall (no node's heartbeat came since); the
      // second, after a beat of a node that has beaten, may not.
      expect(reaped.map((d) => d.node)).toEqual([quick.node]);
      expect(beats).toBeLessThanOrEqual(2);
    });

    it('tells a keeper whose node was reaped that it expired', async () => {
      const {
        nodes: [a, b],
      } = await setup(2);
      await b!.claim('1', 'bob', addr(1));
      const expired: number[] = [];
      const keeper = new PresenceKeeper(
        b!,
        { onReaped: () => {}, onExpired: () => expired.push(1) },
        { intervalMs: HEARTBEAT_MS },
      );
      cleanup.push(() => keeper.stop());
      // a beats meanwhile, as its keeper would: a silence of every node counts only in part.
      await eventually(async () => {
        await a!.heartbeat();
        return (await a!.reap()).length === 1;
      });
      await keeper.tick();
      expect(expired).toEqual([1]);
      await keeper.tick();
      expect(expired).toEqual([1]);
    });

    it('leaves the cluster on close, returning its members', async () => {
      const {
        nodes: [a, b],
      } = await setup(2);
      await a!.claim('1', 'ann', addr(1));
      await a!.join('1', 'lobby', 10);
      await b!.claim('1', 'bob', addr(2));
      await b!.join('1', 'lobby', 10);
      expect(await b!.close()).toEqual([
        {
          id: '1',
          nickname: 'bob',
          address: addr(2),
          rooms: [{ room: 'lobby', count: 1 }],
          lineage: lineageOf(b!.node, '1'),
        },
      ]);
      expect(await a!.find('bob')).toBeUndefined();
      expect(await a!.reap()).toEqual([]);
    });
    it('shares bans between nodes: by key, replaced in place of the oldest, expired ones dropped', async () => {
      const {
        nodes: [a, b],
      } = await setup(2);
      const ban = (mask: string, expires: number | null) => ({
        mask,
        by: 'op',
        reason: 'r',
        expires,
      });
      expect(await b!.bans()).toEqual([]);
      await a!.ban('n:eve', ban('eve', null), 1_000);
      await b!.ban('a:1/128', ban('::1', 5_000), 1_000);
      await a!.ban('n:zed', ban('zed', 2_000), 1_000);
      expect(await b!.bans()).toEqual([ban('eve', null), ban('::1', 5_000), ban('zed', 2_000)]);
      // The same key replaces, and the replacement is the newest.
      await b!.ban('n:eve', ban('EVE', 9_000), 1_500);
      expect(await a!.bans()).toEqual([ban('::1', 5_000), ban('zed', 2_000), ban('EVE', 9_000)]);
      // A ban stored after zed expired drops it.
      await a!.ban('n:kim', ban('kim', null), 3_000);
      expect((await b!.bans()).map((x) => x.mask)).toEqual(['::1', 'EVE', 'kim']);
      expect(await b!.unban('n:eve')).toBe(true);
      expect(await b!.unban('n:eve')).toBe(false);
      expect((await a!.bans()).map((x) => x.mask)).toEqual(['::1', 'kim']);
    });
    it('ends a ban given in seconds that long after it is stored, and says when', async () => {
      const {
        nodes: [a, b],
      } = await setup(2);
      const now = Date.now();
      const given = { mask: 'mallory', by: 'op', reason: 'spam', expires: 1 };
      const stored = await a!.ban('n:mallory', given, now, 600);
      expect(stored).toEqual({ ...given, expires: stored.expires });
      expect(stored.expires).toBeGreaterThanOrEqual(now + 600_000 - 2_000);
      expect(stored.expires).toBeLessThanOrEqual(Date.now() + 600_000 + 2_000);
      expect(await b!.bans()).toEqual([stored]);
      // Without seconds, the end is stored as given.
      const lasting = { ...given, mask: 'eve', expires: null };
      expect(await b!.ban('n:eve', lasting, now)).toEqual(lasting);
      expect(await a!.bans()).toEqual([stored, lasting]);
    });
  });
}
