/**
 * What a session sends of the live events held behind a replay (Session.release), when the
 * room's history changed epoch while it waited: Redis restarted empty, once or more, during
 * a resume (hostile19's F3).
 */
import { describe, expect, it } from 'vitest';
import { type Deliverable, Delivery } from '../../../src/core/events.js';
import { Session, type SessionHost } from '../../../src/core/session.js';
import { FakePeer } from '../../helpers/fake-peer.js';

const host: SessionHost = {
  receive: () => {},
  blank: () => {},
  ended: () => {},
  disconnect: () => {},
  failed: (_s, err) => {
    throw err;
  },
};

const chat = (id: number, epoch: string, msg = `${epoch}:${id}`): Deliverable => ({
  type: 'chat',
  room: 'lobby',
  id,
  at: 1,
  from: 'bob',
  msg,
  epoch,
});
const gap = (epoch: string, reason: 'epoch' | 'deleted' = 'epoch'): Deliverable => ({
  type: 'gap',
  room: 'lobby',
  epoch,
  reason,
});

/** A session whose lobby holds `held`, released behind a replay of `epoch` up to `top`. */
async function released(
  held: Deliverable[],
  top: number,
  epoch: string,
  now: string | undefined | (() => Promise<string>),
  after: Deliverable[] = [],
): Promise<string[]> {
  const peer = new FakePeer();
  const session = new Session(1, peer, host);
  peer.session = session;
  session.holdRoom('lobby');
  for (const item of held) session.deliver(new Delivery(item));
  const fixed = now;
  const current =
    typeof fixed === 'function' ? fixed : fixed === undefined ? undefined : async () => fixed;
  await session.release('lobby', top, epoch, current);
  for (const item of after) session.deliver(new Delivery(item));
  return peer.deliveries.map(({ item }) =>
    item.type === 'chat'
      ? `chat ${item.msg}`
      : item.type === 'gap'
        ? `gap ${item.epoch}${item.reason === 'deleted' ? ' deleted' : ''}`
        : item.type,
  );
}

describe('Session.release across epochs', () => {
  it('drops chats of an epoch lost before the replay, and its later "108" into the same', async () => {
    // The replay read epoch B (top 0); the node still handed E1's chat, then B's own.
    expect(await released([chat(1, 'E1')], 0, 'B', 'B', [gap('B'), chat(1, 'B', 'after')])).toEqual(
      ['chat after'],
    );
  });

  it("drops gaps into epochs older than the replay's, and their chats", async () => {
    const held = [chat(3, 'K4'), gap('K5'), gap('K6'), chat(1, 'K6'), gap('K7')];
    expect(await released(held, 0, 'K8', 'K8')).toEqual([]);
  });

  it("drops what came before the gap into the replay's epoch, and sends what is newer", async () => {
    const held = [chat(7, 'A'), gap('B'), chat(1, 'B'), chat(2, 'B'), gap('C'), chat(1, 'C')];
    // The replay read B up to 1; C came after it (the room is in C now).
    expect(await released(held, 1, 'B', 'C')).toEqual(['chat B:2', 'gap C', 'chat C:1']);
  });

  it('sends a gap into a newer epoch no held chat is of yet, when the room is in it now', async () => {
    expect(await released([chat(2, 'B'), gap('C')], 1, 'B', 'C')).toEqual(['chat B:2', 'gap C']);
  });

  it('sends ids deleted in the epoch in force, held or live after a replay of an empty room', async () => {
    expect(
      await released([gap('B', 'deleted'), chat(51, 'B')], 0, 'B', 'B', [
        gap('B', 'deleted'),
        chat(52, 'B'),
      ]),
    ).toEqual(['gap B deleted', 'chat B:51', 'gap B deleted', 'chat B:52']);
    // Of an epoch not in force: one lost before the replay's.
    expect(await released([gap('A', 'deleted'), chat(2, 'B')], 1, 'B', 'B')).toEqual(['chat B:2']);
  });

  it("takes a gap followed by one into the replay's epoch for older without asking", async () => {
    const asked = async (): Promise<string> => {
      throw new Error('not to be asked');
    };
    expect(await released([gap('A'), chat(1, 'A'), gap('B'), chat(2, 'B')], 1, 'B', asked)).toEqual(
      ['chat B:2'],
    );
  });

  it('sends a gap it cannot judge (the read of the room failed), as before epochs were compared', async () => {
    const failing = async (): Promise<string> => {
      throw new Error('Redis is down');
    };
    expect(await released([chat(2, 'B'), gap('C'), chat(1, 'C')], 1, 'B', failing)).toEqual([
      'chat B:2',
      'gap C',
      'chat C:1',
    ]);
  });

  it('drops what of an older epoch reaches the node only after the release, while the floor stands', async () => {
    // Nothing was held: the broker, still catching up, hands over the lost epoch E2 late.
    const late = [chat(7, 'E2'), gap('E2', 'deleted'), gap('R'), chat(1, 'R'), chat(3, 'R')];
    expect(await released([], 2, 'R', 'R', late)).toEqual(['chat R:3']);
    // Once a chat above the replay passed, ids only grow; ids deleted in R are news.
    const after = [gap('R', 'deleted'), chat(3, 'R'), chat(4, 'R'), gap('N'), chat(1, 'N')];
    expect(await released([], 2, 'R', 'R', after)).toEqual([
      'gap R deleted',
      'chat R:3',
      'chat R:4',
      'gap N',
      'chat N:1',
    ]);
  });

  it('without epochs to go by (no history, or chats that carry none) sends as before', async () => {
    const plain: Deliverable = { type: 'chat', room: 'lobby', id: 2, at: 1, from: 'x', msg: 'p' };
    expect(await released([plain, gap('C')], 1, 'B', undefined)).toEqual(['chat p', 'gap C']);
    expect(await released([chat(1, 'Z')], 0, '', 'B')).toEqual(['chat Z:1']);
  });
});
