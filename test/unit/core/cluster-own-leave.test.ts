/**
 * A nickname freed on one node and taken on another before its holder's leave
 * reached the second: that node shows the holder leaving before the newcomer
 * joins (Roster.replacing). The newcomer itself is never told that it left,
 * also when its own join comes back to it only after it is in the room (its
 * node's subscriber connection was down, and the join was held meanwhile).
 */
import { describe, expect, it } from 'vitest';
import { joinChat as connect, sendRequest as send } from '../../helpers/fake-peer.js';
import { memoryNodes, settle } from '../../helpers/quiet-node.js';

describe('a nickname taken again on another node before its leave arrived', () => {
  it('does not tell the newcomer that it left when its own join comes back late', async () => {
    const { a, b } = memoryNodes();
    const caps = ['errors', 'rooms', 'renames', 'history'];
    const ann = connect(a.chat, 'ann', caps);
    await settle();
    const first = connect(b.chat, 'eve', caps);
    await settle();
    expect(ann.take()).toContainEqual(expect.objectContaining({ cmd: '8', nickname: 'eve' }));
    // Node a's subscriber connection goes down: b's leave of eve does not reach it, and
    // a's own events are held until it is back.
    a.broker.interrupt();
    send(first, { cmd: '3' });
    await settle();
    const second = connect(a.chat, 'eve', caps);
    await settle();
    expect(second.take()).toContainEqual(expect.objectContaining({ cmd: '03' }));
    a.broker.reconnect();
    await settle();
    const told = second.take();
    expect(told).not.toContainEqual(expect.objectContaining({ cmd: '30', nickname: 'eve' }));
    // ann, who saw the first eve join, sees her leave and the second one join.
    const seen = ann.take().filter((m) => m.cmd === '8' || m.cmd === '30');
    expect(seen).toEqual([
      expect.objectContaining({ cmd: '30', nickname: 'eve' }),
      expect.objectContaining({ cmd: '8', nickname: 'eve' }),
    ]);
  });
});
