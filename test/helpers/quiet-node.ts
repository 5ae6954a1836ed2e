/**
 * One cluster node whose broker hands nothing back at publish: the test hands the room's
 * events over itself, as a Redis subscriber connection would, in whatever order it needs.
 */
import type { Broker, BrokerHandler, RoomEvent } from '../../src/core/broker.js';
import { Chat, type ChatOptions } from '../../src/core/chat.js';
import type { HistoryStore, MessageDraft } from '../../src/core/history.js';
import { MemoryPresence, PresenceHub } from '../../src/core/memory-presence.js';
import { senderOrigin } from '../../src/store/common.js';
import { MemoryBroker, MemoryBrokerHub } from '../../src/store/memory-broker.js';
import { MemoryHistoryStore } from '../../src/store/memory-history.js';
import { joinChat } from './fake-peer.js';

/** Lets every pending claim, append and delivery finish. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

export const EXT = ['errors', 'rooms', 'renames', 'whispers'];

/**
 * A broker that never hands a chat back at publish (as when its copy overtook the
 * append's reply, or an earlier id has not arrived): the test hands events over itself.
 */
export function quietBroker(): { broker: Broker; handler: () => BrokerHandler } {
  let handler: BrokerHandler | undefined;
  const broker: Broker = {
    node: 'n0',
    onEvent: (h) => {
      handler = h;
    },
    start: () => Promise.resolve(),
    publish: (key, event) => {
      if (event.type === 'chat') return;
      handler?.room(key, event);
      if (event.type === 'joined') handler?.placed?.(key, event, { epoch: '', id: 0 });
    },
    inEpoch: (_key, _epoch, then) => then(),
    askReread: () => {},
    whisper: (_node, event) => {
      handler?.whisper(event);
      return Promise.resolve(true);
    },
    notify: () => Promise.resolve(true),
    subscribe: () => Promise.resolve(),
    unsubscribe: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
  return {
    broker,
    handler: () => {
      if (handler === undefined) throw new Error('no handler yet');
      return handler;
    },
  };
}

/** One node on `broker`, with its own Presence. */
export function quietNode(broker: Broker, history: HistoryStore): Chat {
  return new Chat({
    history,
    cluster: {
      presence: new MemoryPresence({ hub: new PresenceHub(), node: 'n0' }),
      broker,
      originOf: senderOrigin,
    },
  });
}

/**
 * alice and bob on one node of a quiet broker, over a store that `restart()` replaces
 * with an empty one, as Redis restarted without persistence (a new epoch).
 */
export async function restartableNode() {
  const { broker, handler } = quietBroker();
  const make = () => new MemoryHistoryStore({ retention: { maxMessages: 100, maxAgeMs: 0 } });
  let store = make();
  const history: HistoryStore = {
    append: (key, draft) => store.append(key, draft),
    room: (key) => store.room(key),
    read: (key, query) => store.read(key, query),
    prune: (now) => store.prune(now),
    close: () => store.close(),
  };
  const chat = quietNode(broker, history);
  const alice = joinChat(chat, 'alice', EXT);
  const bob = joinChat(chat, 'bob', EXT);
  await settle();
  const aliceChat = (id: number, msg: string): void => {
    const origin = alice.session.origin;
    const event: RoomEvent = { type: 'chat', room: 'lobby', id, at: 0, from: 'alice', msg, origin };
    handler().room(chat.lobby.key, event);
  };
  return {
    handler,
    history,
    alice,
    bob,
    key: chat.lobby.key,
    restart: () => {
      store = make();
    },
    /** Hands alice's chat `msg` over as `id`, with her origin, as her chats carry it. */
    aliceChat,
    /**
     * The subscription catches up after the restart: "lost" with the store's new epoch,
     * then alice's "hello", id 1 of it.
     */
    helloComesBack: async (): Promise<void> => {
      const key = chat.lobby.key;
      const { epoch } = await history.room(key);
      handler().lost?.(key, 'epoch', epoch);
      aliceChat(1, 'hello');
    },
  };
}

/**
 * A node on a quiet broker whose history hands each chat's copy over as soon as it is
 * stored, before the append replies: on Redis the subscriber connection can beat the
 * command connection, which no test can time on a real Redis.
 */
export function echoingNode(): { chat: Chat; handler: () => BrokerHandler } {
  const { broker, handler } = quietBroker();
  const store = new MemoryHistoryStore({ retention: { maxMessages: 100, maxAgeMs: 0 } });
  const history: HistoryStore = {
    append: async (key: string, draft: MessageDraft) => {
      const appended = await store.append(key, draft);
      const { id, at, from, msg } = appended.message;
      const origin = draft.sender === undefined ? undefined : senderOrigin(draft.sender);
      handler().room(key, { type: 'chat', room: 'lobby', id, at, from, msg, origin });
      return appended;
    },
    room: (key) => store.room(key),
    read: (key, query) => store.read(key, query),
    prune: (now) => store.prune(now),
    close: () => store.close(),
  };
  return { chat: quietNode(broker, history), handler };
}

/** A node of an in-process cluster: its Chat, and the Presence and Broker it shares hubs by. */
export interface MemoryNode {
  chat: Chat;
  presence: MemoryPresence;
  broker: MemoryBroker;
}

/** Two nodes, `a` and `b`, on shared in-process hubs and one history store, each with `options`. */
export function memoryNodes(options: ChatOptions = {}): { a: MemoryNode; b: MemoryNode } {
  const presenceHub = new PresenceHub();
  const brokerHub = new MemoryBrokerHub();
  const history = new MemoryHistoryStore({ retention: { maxMessages: 100, maxAgeMs: 0 } });
  const make = (node: string): MemoryNode => {
    const presence = new MemoryPresence({ hub: presenceHub, node });
    const broker = new MemoryBroker({ hub: brokerHub, node });
    const chat = new Chat({
      maxUsers: 10,
      ...options,
      history,
      cluster: { presence, broker, originOf: senderOrigin },
    });
    return { chat, presence, broker };
  };
  return { a: make('a'), b: make('b') };
}
