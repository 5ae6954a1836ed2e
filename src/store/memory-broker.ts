import { randomUUID } from 'node:crypto';
import type { Broker, BrokerHandler, RoomEvent, RoomRef, WhisperEvent } from '../core/broker.js';

/**
 * Brokers in one process that see each other's events: a single node has a hub of its
 * own; tests put several on one hub to stand for several nodes.
 */
export class MemoryBrokerHub {
  readonly nodes = new Map<string, MemoryBroker>();
  /** Every broker subscribed to a key, so a publish visits only those. */
  readonly subscribers = new Map<string, MemoryBroker[]>();
}

export interface MemoryBrokerOptions {
  readonly hub?: MemoryBrokerHub;
  readonly node?: string;
}

/**
 * The single-process broker: publish hands the event to the local handler synchronously,
 * with no copy, queue or encoding, so a node without a cluster pays a map lookup per event.
 *
 * Chats are handed over in the order they are published, which is id order: in one
 * process ids are assigned (Room.nextId, or a HistoryStore whose appends resolve in call
 * order) in the order chats are published.
 */
export class MemoryBroker implements Broker {
  readonly node: string;
  private readonly hub: MemoryBrokerHub;
  private handler: BrokerHandler | undefined;
  /** Subscribed room keys -> this node's name for the room. */
  private readonly names = new Map<string, string>();
  private closed = false;

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
    if (subscribers.length === 1) {
      subscribers[0]!.deliver(key, event);
      return;
    }
    // Lists are replaced, never changed, so a handler that (un)subscribes while this
    // loop runs does not disturb it.
    for (const broker of subscribers) broker.deliver(key, event);
  }

  whisper(node: string, event: WhisperEvent): void {
    if (this.closed) return;
    const target = this.hub.nodes.get(node);
    target?.handler?.whisper(event);
  }

  subscribe(room: RoomRef): Promise<void> {
    if (this.closed) return Promise.reject(new Error('broker is closed'));
    if (!this.names.has(room.key)) {
      const list = this.hub.subscribers.get(room.key);
      this.hub.subscribers.set(room.key, list === undefined ? [this] : [...list, this]);
    }
    this.names.set(room.key, room.name);
    return Promise.resolve();
  }

  unsubscribe(key: string): Promise<void> {
    if (this.names.delete(key)) {
      const list = this.hub.subscribers.get(key)!;
      const rest = list.filter((broker) => broker !== this);
      if (rest.length === 0) this.hub.subscribers.delete(key);
      else this.hub.subscribers.set(key, rest);
    }
    return Promise.resolve();
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    for (const key of [...this.names.keys()]) void this.unsubscribe(key);
    this.closed = true;
    this.hub.nodes.delete(this.node);
    return Promise.resolve();
  }

  private deliver(key: string, event: RoomEvent): void {
    const name = this.names.get(key);
    if (name === undefined || this.handler === undefined) return;
    this.handler.room(key, event.room === name ? event : { ...event, room: name });
  }
}
