/**
 * A sender's "71" on a cluster node waits for the room's epoch (Broker.inEpoch), and is
 * filed under the epoch it was stored in, also when that epoch was lost before the room
 * got to it.
 */
import { describe, expect, it } from 'vitest';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';
import { joinChat, sendRequest } from '../../helpers/fake-peer.js';
import { quietBroker, quietNode, settle } from '../../helpers/quiet-node.js';

const HISTORY = ['errors', 'rooms', 'history'];

function node(inEpoch: (then: (movedTo?: string) => void) => void) {
  const { broker } = quietBroker();
  broker.inEpoch = (_key, _epoch, then) => inEpoch(then);
  const history = new MemoryHistoryStore({ retention: { maxMessages: 100, maxAgeMs: 0 } });
  return { chat: quietNode(broker, history), history };
}

describe('a sender’s "71" on a cluster node', () => {
  it('tells the sender alone of its chat’s epoch, lost before the room got to it, around the "71"', async () => {
    const { chat, history } = node((then) => then('the next epoch'));
    const ann = joinChat(chat, 'ann', HISTORY);
    await settle();
    ann.take();
    sendRequest(ann, { cmd: '7', msg: 'hi', room: 'lobby' });
    await settle();
    const { epoch } = await history.room(chat.lobby.key);
    expect(ann.take()).toEqual([
      { cmd: '108', room: 'lobby', epoch, reason: 'epoch' },
      expect.objectContaining({ cmd: '71', room: 'lobby', id: 1 }),
      { cmd: '108', room: 'lobby', epoch: 'the next epoch', reason: 'epoch' },
    ]);
  });

  it('holds the sender’s later requests until its "71" is out', async () => {
    let release: ((movedTo?: string) => void) | undefined;
    const { chat } = node((then) => {
      release = then;
    });
    const ann = joinChat(chat, 'ann', HISTORY);
    await settle();
    ann.take();
    sendRequest(ann, { cmd: '7', msg: 'hi', room: 'lobby' });
    sendRequest(ann, { cmd: '1' });
    await settle();
    expect(ann.take()).toEqual([]);
    release!();
    await settle();
    expect(ann.take().map((m) => m.cmd)).toEqual(['71', '10']);
  });
});
