import type { Delivery, PeerAddress } from './events.js';

/** Structured logging, injected so the core never binds a logging library. */
export interface Logger {
  debug(fields: object, message: string): void;
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

export type { PeerAddress } from './events.js';

/** Why a session ended. Transports count these; opted-in clients see an error code. */
export type DisconnectReason =
  | 'exit'
  | 'lost'
  | 'nickname-taken'
  | 'room-full'
  | 'invalid-nickname'
  | 'banned-words'
  | 'frame-too-large'
  /** Closed while all clients' unfinished requests together were over --max-partial-total. */
  | 'partial-total'
  | 'protocol'
  | 'flooding'
  | 'slow-consumer'
  | 'timeout'
  | 'too-many-connections'
  | 'internal-error'
  | 'shutdown'
  /** Removed by an operator's KICK. */
  | 'kicked'
  /** Removed by an operator's BAN. */
  | 'banned'
  /** CONNECT with a banned nickname, or a connection from a banned address. */
  | 'banned-nickname'
  | 'banned-address'
  /** Taken over by a CONNECT that presented this session's resume token. */
  | 'replaced'
  /** This node was cut off from the cluster for longer than the heartbeat timeout. */
  | 'cluster-unavailable';

/**
 * One client connection as the core sees it: something that accepts messages
 * and can be closed. TCP, TLS and WebSocket connections all look like this.
 */
export interface Peer {
  /** The client's address as the server sees it (shown by USERS). */
  readonly remote: PeerAddress;
  /** The listening address the client reached (sent in "03"). */
  readonly local: PeerAddress;
  /** What carries the connection, as log lines name it: "TCP" (the course's word), "TLS", "WebSocket". */
  readonly carrier: string;
  /** Queue an event or reply, in this peer's dialect. Must not call back into the core synchronously. */
  send(delivery: Delivery): void;
  /**
   * Queues `deliveries` in order, each once the client has read enough of
   * what was queued before it that it fits well under the transport's queue
   * cap: output the client asked for (history) waits for a slow reader
   * instead of cutting it off as a slow consumer. Resolves once the last is
   * queued, or the connection is closing. Without it they are sent at once.
   */
  sendPaced?(deliveries: readonly Delivery[]): Promise<void>;
  /**
   * Live events are held for this client behind a replay (Session.heldBytes grew): they are
   * queued for it as much as what it was sent, and count in what all clients hold together.
   */
  holding?(): void;
  /**
   * More than three quarters of what the transport lets queue for the client waits for it to
   * read: it is not keeping up with what it is sent. A whisper to it is refused rather than
   * queued, so that senders cannot outpace a reader into being cut off as a slow consumer.
   * (History it asked for is paced to fill at most half: a reader paging through it on a
   * slow link is not busy for that.)
   */
  busy?(): boolean;
  /** Flush what is queued, then close. Idempotent. Reports back through Session.ended. */
  close(reason: DisconnectReason): void;
  /**
   * Stop reading from the client (true) or read again (false): the core's
   * request queue for this session is full. Frames already read still arrive.
   */
  pause?(paused: boolean): void;
}
