/**
 * confab's per-message work without sockets: a read of chat frames from one
 * member goes through the frame decoder, the request parser and the core, and
 * each broadcast is encoded and queued for the other nine members as the TCP
 * transport does. Reports ns per message and per delivery; compare variants
 * in the same run of this script. Kernel time (the writes) is not included.
 *
 *   npx tsx bench/pipeline.ts
 */
// The server process loads ioredis, and with it what that does to String.prototype.
import '../src/store/ioredis.js';
import { Chat } from '../src/core/chat.js';
import type { Delivery } from '../src/core/events.js';
import type { DisconnectReason, Peer, PeerAddress } from '../src/core/ports.js';
import type { Session } from '../src/core/session.js';
import { FrameDecoder } from '../src/protocol/frame-decoder.js';
import { parseRequestFrame, refusedFrame } from '../src/protocol/request-codec.js';
import { EncoderCache, JsonDialect, jsonLines } from '../src/transports/dialects/json.js';
import { bestNsPerCall } from './lib/timing.js';

const MEMBERS = 10;
const PER_READ = 150;

/** Queues as the TCP transport does: copies into a 16 KiB batch buffer, "written" when full. */
const lines = new JsonDialect(jsonLines);

class QueuePeer implements Peer {
  static port = 40000;
  readonly remote: PeerAddress = { ip: '127.0.0.1', port: QueuePeer.port++ };
  readonly local: PeerAddress = { ip: '127.0.0.1', port: 20825 };
  readonly carrier = 'TCP';
  session!: Session;
  private readonly encoder = new EncoderCache((caps) => lines.encoderFor(caps));
  readonly batch = Buffer.allocUnsafeSlow(16 * 1024);
  batchBytes = 0;
  bytes = 0;
  send(delivery: Delivery): void {
    const b = this.encoder.bytes(delivery, this.session.caps);
    if (b === undefined) return;
    if (this.batchBytes + b.length > this.batch.length) this.batchBytes = 0;
    this.batch.set(b, this.batchBytes);
    this.batchBytes += b.length;
    this.bytes += b.length;
  }
  close(_reason: DisconnectReason): void {}
}

const chat = new Chat({ maxUsers: MEMBERS });
const peers: QueuePeer[] = [];
for (let i = 0; i < MEMBERS; i++) {
  const peer = new QueuePeer();
  peer.session = chat.open(peer);
  peer.session.receive(parseRequestFrame(Buffer.from(`{"cmd":"0","nickname":"m${i}","caps":[]}`)));
  peers.push(peer);
}
const sender = peers[0]!;
const decoder = new FrameDecoder(65536, {
  frame: (frame) => sender.session.receive(parseRequestFrame(frame)),
  refused: (reason) => sender.session.receive(refusedFrame(reason)),
});
const line = (seq: number) =>
  `{"cmd":"7","msg":"0 ${seq} ${1_700_000_000_000 + seq} xxxxxxxxxxxxxxxxxxxxxxxx"}\n`;
let next = 0;
const reads = Array.from({ length: 16 }, (_, r) =>
  Buffer.from(Array.from({ length: PER_READ }, (_, i) => line(r * PER_READ + i)).join('')),
);

const perRead = bestNsPerCall(
  { pipeline: () => decoder.push(reads[next++ % reads.length]!) },
  { rounds: 5, warmup: 500, reps: 4000 },
).get('pipeline')!;
const best = perRead / PER_READ;
const delivered = peers.slice(1).reduce((n, p) => n + p.bytes, 0);
if (delivered === 0) throw new Error('nothing was delivered');
console.log(
  `${best.toFixed(0)} ns per message, ${(best / (MEMBERS - 1)).toFixed(1)} ns per delivery (best of 5)`,
);
