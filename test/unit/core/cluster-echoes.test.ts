/**
 * A node's own chats coming back from the broker (Identities.sentBy): the sender is never
 * shown its own chat, whatever order the copy, the append's reply and a Redis restart's
 * "lost" come in. The broker here hands nothing back at publish; the test hands
 * the room's chats over itself, as a Redis subscriber connection would.
 */
import { describe, expect, it } from 'vitest';
import { joinChat as connect, sendRequest as send } from '../../helpers/fake-peer.js';
import { echoingNode, restartableNode, settle } from '../../helpers/quiet-node.js';

const _retention = { maxMessages: 100, maxAgeMs: 0 };

describe("a node's own chats coming back", () => {
  it('knows its own chat stored in a new epoch when it is the first chat of its node in the room, after chats of the old one', async () => {
    // As in "knows its own chat stored in a new epoch before the node learnt of it, after
    // chats of the old one" (cluster-chat), but no member of this node had chatted in the
    // room before the restart: the room's echoes are made by this append, in its epoch. On
    // Redis that is the usual case: a chat that is the next id comes back at once and leaves
    // nothing waiting.
    const { handler, history, alice, bob, key, restart, helloComesBack } = await restartableNode();
    const old = (await history.room(key)).epoch;
    // Another node's chats, ids 1..5 of the old epoch.
    for (let id = 1; id <= 5; id++) {
      const c = { type: 'chat', room: 'lobby', id, at: 0, from: 'carol', msg: `c${id}` } as const;
      handler().room(key, c);
    }
    await settle();
    for (const peer of [alice, bob]) peer.take();
    // Redis restarted empty; alice's first chat in the room is id 1 of the new epoch.
    restart();
    send(alice, { cmd: '7', msg: 'hello' });
    await settle();
    // The old epoch's last chat, published before the restart, still arrives.
    const c6 = { type: 'chat', room: 'lobby', id: 6, at: 0, from: 'carol', msg: 'c6' } as const;
    handler().room(key, c6);
    expect((await history.room(key)).epoch).not.toBe(old);
    await helloComesBack();
    const shown = expect.objectContaining({ cmd: '70', from: 'alice', msg: 'hello' });
    expect(bob.take()).toContainEqual(shown);
    expect(alice.take()).not.toContainEqual(shown);
  });

  it("does not take another node's chat of the old epoch for its own with the same id of the new one", async () => {
    // The room was empty before Redis restarted: carol's chat, id 1 of the old epoch, still
    // arrives after alice's append was given id 1 of the new one.
    const { handler, alice, bob, key, restart, helloComesBack } = await restartableNode();
    for (const peer of [alice, bob]) peer.take();
    restart();
    send(alice, { cmd: '7', msg: 'hello' });
    await settle();
    const carol = { type: 'chat', room: 'lobby', id: 1, at: 0, from: 'carol', msg: 'hi' } as const;
    handler().room(key, carol);
    await helloComesBack();
    const hi = expect.objectContaining({ cmd: '70', from: 'carol', msg: 'hi' });
    const shown = expect.objectContaining({ cmd: '70', from: 'alice', msg: 'hello' });
    const got = alice.take();
    expect(got).toContainEqual(hi);
    expect(got).not.toContainEqual(shown);
    expect(bob.take()).toEqual(expect.arrayContaining([hi, shown]));
  });

  it('knows its own chat with a lone surrogate whose copy came before the append replied', async () => {
    // The store keeps U+FFFD for a lone surrogate (JSON's "\ud800" lets a client send one):
    // the copy's text is not the text the chat took off with.
    const { chat } = echoingNode();
    const alice = connect(chat, 'alice');
    const bob = connect(chat, 'bob');
    await settle();
    for (const peer of [alice, bob]) peer.take();
    send(alice, { cmd: '7', msg: 'a\ud800b' });
    await settle();
    expect(bob.take()).toEqual([{ cmd: '70', from: 'alice', msg: 'a\ufffdb' }]);
    expect(alice.take()).toEqual([]);
  });
});
