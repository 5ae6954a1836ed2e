import type { DisconnectReason, Peer, PeerAddress } from '../../src/core/ports.js';
import type { Session } from '../../src/core/session.js';
import type { Outbound } from '../../src/protocol/message-codec.js';
import type { ServerMessage } from '../../src/protocol/messages.js';

/** A connection that records what the core sends it, for core tests without sockets. */
export class FakePeer implements Peer {
  static nextPort = 40000;
  readonly remote: PeerAddress;
  readonly local: PeerAddress = { ip: '127.0.0.1', port: 20825 };
  readonly outbox: Outbound[] = [];
  closedWith: DisconnectReason | undefined;
  session!: Session;

  constructor(ip = '127.0.0.1') {
    this.remote = { ip, port: FakePeer.nextPort++ };
  }

  send(message: Outbound): void {
    this.outbox.push(message);
  }

  close(reason: DisconnectReason): void {
    this.closedWith ??= reason;
  }

  /** Messages received so far, emptied. */
  take(): ServerMessage[] {
    return this.outbox.splice(0).map((o) => o.message);
  }
}
