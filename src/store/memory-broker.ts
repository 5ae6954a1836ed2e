import { randomUUID } from 'node:crypto';
import type {
  Broker,
  BrokerHandler,
  NodeNotice,
  RoomEvent,
  RoomRef,
  WhisperEvent,
} from '../core/broker.js';

/** One broker's subscription to one room. */
interface Subscription {
  readonly broker: MemoryBroker;
  /** That node's name for the room. */
  name: string;
  /** False once unsubscribed, perhaps by an earlier handler of the publish under way. */
  active: boolean;
}

/**
 * Brokers in one process that see each other's events: a single node has a hub of its
 * own; tests put several on one hub to stand for several nodes.
 */
export class MemoryBrokerHub {
  readonly nodes = new Map<string, MemoryBroker>();
  /**
   * Per room key, the subscriptions a publish visits. Lists are replaced, never changed,
   * so a handler that (un)subscribes during a publish does not disturb its loop.
   */
  readonly subscribers = new Map<string, readonly Subscription[]>();
}

export interface MemoryBrokerOptions {
  readonly hub?: MemoryBrokerHub;
  readonly node?: string;
}

/**
 * The single-process broker: publish hands the event to the local handler synchronously,
 * with no copy, queue or encoding, so a node without a cluster pays one map lookup per
 * event (bench/broker.ts).
 *
 * Chats are handed over in the order they are published, which is id order: in one
 * process ids are assigned (Room.nextId, or a HistoryStore whose appends resolve in call
 * order) in the order chats are published.
 */
export class MemoryBroker implements Broker {
  readonly node: string;
  private readonly hub: MemoryBrokerHub;
  private handler: BrokerHandler | undefined;
  private readonly subscriptions = new Map<string, Subscription>();
  private closed = false;
  /** While interrupted: per room key, what to hand over when it reconnects. */
  private missed: Map<string, RoomEvent[]> | undefined;
  /** Per subscribed room key, the id of the last chat handed over (for `placed`). */
  private readonly lastChat = new Map<string, number>();

  constructor(options: MemoryBrokerOptions = {}) {
    this.hub = options.hub ?? new MemoryBrokerHub();
    this.node = options.node ?? randomUUID();
    if (this.hub.nodes.has(this.node)) throw new Error(`node ${this.node} is already on this hub`);
    this.hub.nodes.set(this.node, this);
  }

  onEvent(handler: BrokerHandler): void {
    this.handler = handler;
  }

  start(): Promise<void> {
    return Promise.resolve();
  }

  publish(key: string, event: RoomEvent): void {
    if (this.closed) return;
    const subscribers = this.hub.subscribers.get(key);
    if (subscribers === undefined) return;
    for (const subscription of subscribers) {
      if (subscription.active) {
        subscription.broker.deliver(key, subscription.name, event, subscription.broker === this);
      }
    }
  }

  /** One process's history keeps its epoch: nothing to wait for. */
  inEpoch(_key: string, _epoch: string, then: (movedTo?: string) => void): void {
    then();
  }

  /** Memory Presence never loses its members: nothing to read again. */
  askReread(_key: string): void {}

  whisper(node: string, event: WhisperEvent): Promise<boolean> {
    if (this.closed) return Promise.reject(new Error('broker is closed'));
    const to = this.hub.nodes.get(node);
    to?.handler?.whisper(event);
    return Promise.resolve(to !== undefined);
  }

  notify(node: string | undefined, notice: NodeNotice): Promise<boolean | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    if (node !== undefined) {
      const to = this.hub.nodes.get(node);
      to?.handler?.notice?.(notice);
      return Promise.resolve(to !== undefined);
    }
    for (const other of [...this.hub.nodes.values()]) {
      if (other !== this) other.handler?.notice?.(notice);
    }
    return Promise.resolve(true);
  }

  subscribe(room: RoomRef): Promise<void> {
    if (this.closed) return Promise.reject(new Error('broker is closed'));
    const existing = this.subscriptions.get(room.key);
    if (existing !== undefined) {
      existing.name = room.name;
      return Promise.resolve();
    }
    const subscription: Subscription = { broker: this, name: room.name, active: true };
    this.subscriptions.set(room.key, subscription);
    const list = this.hub.subscribers.get(room.key) ?? [];
    this.hub.subscribers.set(room.key, [...list, subscription]);
    return Promise.resolve();
  }

  unsubscribe(key: string): Promise<void> {
    const subscription = this.subscriptions.get(key);
    if (subscription !== undefined) {
      this.subscriptions.delete(key);
      this.lastChat.delete(key);
      subscription.active = false;
      const rest = this.hub.subscribers.get(key)!.filter((s) => s !== subscription);
      if (rest.length === 0) this.hub.subscribers.delete(key);
      else this.hub.subscribers.set(key, rest);
    }
    return Promise.resolve();
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    for (const key of [...this.subscriptions.keys()]) void this.unsubscribe(key);
    this.closed = true;
    this.hub.nodes.delete(this.node);
    return Promise.resolve();
  }

  /**
   * Stands for a lost subscriber connection, as a Redis broker's: until
   * `reconnect`, other nodes' events do not arrive: chats are kept (a Redis
   * broker reads them from history), as are this node's own events (held
   * until then), everything else is gone.
   */
  interrupt(): void {
    this.missed ??= new Map();
  }

  /** Hands over the chats missed while interrupted, then tells the handler to resync each room. */
  reconnect(): void {
    const missed = this.missed;
    if (missed === undefined) return;
    this.missed = undefined;
    for (const [key, subscription] of [...this.subscriptions]) {
      for (const event of missed.get(key) ?? []) this.deliver(key, subscription.name, event, true);
      this.handler?.resync?.(key, 'subscription');
    }
  }

  private deliver(key: string, name: string, event: RoomEvent, own = false): void {
    if (this.missed !== undefined) {
      if (event.type === 'chat' || own) {
        const chats = this.missed.get(key) ?? [];
        chats.push(event);
        this.missed.set(key, chats);
      }
      return;
    }
    const handler = this.handler;
    handler?.room(key, event.room === name ? event : { ...event, room: name });
    if (event.type === 'chat') {
      this.lastChat.set(key, event.id);
    } else if (own && event.type === 'joined' && handler?.placed !== undefined) {
      // Its own join, in its place: after every chat handed over before it.
      handler.placed(key, { ...event, room: name }, { epoch: '', id: this.lastChat.get(key) ?? 0 });
    }
  }
}
