/**
 * OwnChats alone: which local member sent a chat the broker hands back, by the chat being
 * handed over, by id and epoch once its append replied, by name, time and text before,
 * and by nickname only where the holder may have sent it. cluster-chat and cluster-echoes
 * run the same through Chat.
 */
import { expect, it } from 'vitest';
import { nicknameKey } from '../../../src/core/nickname.js';
import { OwnChats, type Sender, WAITING_CHATS } from '../../../src/core/own-chats.js';

interface Member extends Sender<Member> {
  successor: Member | undefined;
  resumed: boolean;
  spoke: boolean;
}

function member(): Member {
  return { successor: undefined, resumed: false, spoke: false };
}

function node(holders: Record<string, Member> = {}): OwnChats<Member> {
  const nicknames = new Map(Object.entries(holders).map(([name, m]) => [nicknameKey(name), m]));
  return new OwnChats<Member>(nicknames);
}

function chat(id: number, from = 'alice', msg = 'hi', at = 0) {
  return { type: 'chat', room: 'lobby', id, at, from, msg } as const;
}

it('knows a chat handed back while it is handed over, and keeps nothing for it', () => {
  const own = node();
  const alice = member();
  own.handing('lobby', 1, alice);
  expect(own.senderOf('lobby', chat(1), 'e')).toBe(alice);
  expect(own.handedBack()).toBe(true);
  expect(own.senderOf('lobby', chat(1), 'e')).toBeUndefined();
});

it('does not take another room or id for the chat being handed over', () => {
  const own = node();
  const alice = member();
  own.handing('lobby', 2, alice);
  expect(own.senderOf('physics', chat(2), 'e')).toBeUndefined();
  expect(own.senderOf('lobby', chat(1), 'e')).toBeUndefined();
  expect(own.handedBack()).toBe(false);
});

it('knows a chat that waited by its id; a later id means it will not come', () => {
  const own = node();
  const alice = member();
  const bob = member();
  own.expect('lobby', 3, alice, 'e');
  own.expect('lobby', 5, bob, 'e');
  expect(own.senderOf('lobby', chat(2, 'carol'), 'e')).toBeUndefined();
  expect(own.senderOf('lobby', chat(3), 'e')).toBe(alice);
  // Id 5 never came: 6 passes it.
  expect(own.senderOf('lobby', chat(6, 'bob'), 'e')).toBeUndefined();
  expect(own.senderOf('lobby', chat(5, 'bob'), 'e')).toBeUndefined();
});

it('gives the session that took the sender over', () => {
  const own = node();
  const alice = member();
  const again = member();
  alice.successor = again;
  own.expect('lobby', 1, alice, 'e');
  expect(own.senderOf('lobby', chat(1), 'e')).toBe(again);
  const flight = own.takeOff('lobby', 'alice', 7, 'hi', alice);
  expect(own.senderOf('lobby', chat(2, 'alice', 'hi', 7), 'e')).toBe(again);
  expect(own.land('lobby', 'alice', flight)).toBe(false);
});

it('knows a copy that comes before its append replied by name, time and text, oldest first', () => {
  const own = node();
  const alice = member();
  const first = own.takeOff('lobby', 'alice', 7, 'hi', alice);
  const second = own.takeOff('lobby', 'alice', 7, 'hi', alice);
  expect(own.senderOf('lobby', chat(1, 'alice', 'hi', 8), 'e')).toBeUndefined();
  expect(own.senderOf('lobby', chat(1, 'alice', 'ho', 7), 'e')).toBeUndefined();
  expect(own.senderOf('lobby', chat(1, 'alice', 'hi', 7), 'e')).toBe(alice);
  // The first copy came already; the second append replied before its copy.
  expect(own.land('lobby', 'alice', first)).toBe(false);
  expect(own.land('lobby', 'alice', second)).toBe(true);
  expect(own.senderOf('lobby', chat(2, 'alice', 'hi', 7), 'e')).toBeUndefined();
});

it('matches a sent lone surrogate with the stored U+FFFD', () => {
  const own = node();
  const alice = member();
  own.takeOff('lobby', 'alice', 7, 'a\ud800b', alice);
  expect(own.senderOf('lobby', chat(1, 'alice', 'a\ufffdb', 7), 'e')).toBe(alice);
});

it("keeps a chat of an epoch it has not heard of for that epoch's ids", () => {
  const own = node();
  const alice = member();
  const bob = member();
  own.expect('lobby', 1, bob, 'old');
  expect(own.senderOf('lobby', chat(1, 'bob'), 'old')).toBe(bob);
  // Redis restarted: alice's append got id 1 of the new epoch, and the old epoch's later
  // chats still arrive; they pass only the ids of their own epoch.
  own.expect('lobby', 1, alice, 'new');
  expect(own.senderOf('lobby', chat(2, 'carol'), 'old')).toBeUndefined();
  own.newEpoch('lobby', 'new');
  expect(own.senderOf('lobby', chat(1), 'new')).toBe(alice);
});

it('drops what waited for a new epoch, and everything when the room is forgotten', () => {
  const own = node();
  const alice = member();
  own.expect('lobby', 4, alice, 'old');
  own.newEpoch('lobby', 'new');
  expect(own.senderOf('lobby', chat(4), 'new')).toBeUndefined();
  own.expect('lobby', 5, alice, 'new');
  own.forget('lobby');
  expect(own.senderOf('lobby', chat(5), 'new')).toBeUndefined();
});

it("knows another node's chat by name only for a holder who resumed", () => {
  const alice = member();
  const own = node({ Alice: alice });
  // The name folds: "alice" and "Alice" are one holder.
  expect(own.senderOf('lobby', chat(1, 'alice'), 'e')).toBeUndefined();
  alice.resumed = true;
  expect(own.senderOf('lobby', chat(2, 'alice'), 'e')).toBe(alice);
});

it(`knows its own chats past ${WAITING_CHATS} waiting by the name of a holder who chatted`, () => {
  const alice = member();
  const own = node({ alice });
  for (let id = 1; id <= WAITING_CHATS + 1; id++) own.expect('lobby', id, alice, 'e');
  // Id 1 was pushed out: known by name, and only if the holder chatted under it.
  expect(own.senderOf('lobby', chat(1), 'e')).toBeUndefined();
  alice.spoke = true;
  expect(own.senderOf('lobby', chat(1), 'e')).toBe(alice);
  expect(own.senderOf('lobby', chat(2), 'e')).toBe(alice);
  // A new epoch starts the count again.
  own.newEpoch('lobby', 'new');
  expect(own.senderOf('lobby', chat(1, 'alice'), 'new')).toBeUndefined();
});
