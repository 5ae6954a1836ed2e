import type { Chat } from '../../src/core/chat.js';
import type { Delivery } from '../../src/core/events.js';
import type { DisconnectReason, Peer, PeerAddress } from '../../src/core/ports.js';
import { NO_CAPS, type Session } from '../../src/core/session.js';
import type { Request, ServerMessage } from '../../src/protocol/messages.js';
import { toServerMessage } from '../../src/transports/dialects/json.js';

/**
 * A connection that records what the core sends it, for core tests without
 * sockets: each delivery as the JSON dialect shows it to this session's
 * capabilities at the time it was sent (what it is not shown, it never gets).
 */
export class FakePeer implements Peer {
  static nextPort = 40000;
  readonly remote: PeerAddress;
  readonly local: PeerAddress = { ip: '127.0.0.1', port: 20825 };
  readonly carrier = 'TCP';
  readonly outbox: ServerMessage[] = [];
  /** Every delivery handed over, shown or not: one broadcast is one Delivery for all. */
  readonly deliveries: Delivery[] = [];
  closedWith: DisconnectReason | undefined;
  session!: Session;

  constructor(ip = '127.0.0.1') {
    this.remote = { ip, port: FakePeer.nextPort++ };
  }

  send(delivery: Delivery): void {
    // chat.open() may answer before it returns, while this.session is still unset.
    this.deliveries.push(delivery);
    const caps = (this.session as Session | undefined)?.caps ?? NO_CAPS;
    const message = toServerMessage(delivery.item, caps);
    if (message !== undefined) this.outbox.push(message);
  }

  close(reason: DisconnectReason): void {
    this.closedWith ??= reason;
  }

  /** Messages received so far, emptied. */
  take(): ServerMessage[] {
    return this.outbox.splice(0);
  }
}

/** Hands `request` to the peer's session, as its connection would once it parsed it. */
export function sendRequest(peer: FakePeer, request: Request): void {
  peer.session.receive({ ok: true, request });
}

/** A new connection to `chat` from `ip` that has sent CONNECT as `nickname` (with `caps`, if any). */
export function joinChat(chat: Chat, nickname: string, caps?: string[], ip?: string): FakePeer {
  return connectWith(
    chat,
    caps === undefined ? { cmd: '0', nickname } : { cmd: '0', nickname, caps },
    ip,
  );
}

/** A new client of `chat` that sends `connect`: a CONNECT with whatever fields the test needs. */
export function connectWith(chat: Chat, connect: Request, ip?: string): FakePeer {
  const peer = new FakePeer(ip);
  peer.session = chat.open(peer);
  sendRequest(peer, connect);
  return peer;
}
