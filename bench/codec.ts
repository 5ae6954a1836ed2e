/**
 * Per-message cost of the codec steps on confab's hot path, in ns, for a
 * typical chat frame: cutting frames from a read, parsing a request, and
 * encoding the broadcast. In-process and single-threaded, so it isolates the
 * code from the network; compare before/after in the same run of this script.
 *
 *   npx tsx bench/codec.ts
 */
// The server process loads ioredis, and with it what that does to String.prototype.
import '../src/store/ioredis.js';
import { FrameDecoder } from '../src/protocol/frame-decoder.js';
import { serializeLine } from '../src/protocol/message-codec.js';
import type { ServerMessage } from '../src/protocol/messages.js';
import { parseRequestFrame } from '../src/protocol/request-codec.js';
import { jsonLines } from '../src/transports/dialects/json.js';
import { bestNsPerCall } from './lib/timing.js';

const MSG = '3 123456 1234567890123 xxxxxxxxxxxxxxxxxxxxxxxx';
const line = Buffer.from(`{"cmd":"7","msg":"${MSG}"}\n`);
const PER_READ = 150;
const read = Buffer.concat(Array.from({ length: PER_READ }, () => line));
const frame = line.subarray(0, line.length - 1);
const chat: ServerMessage = { cmd: '70', from: 'm3', msg: MSG };

let sink = 0;
const decoder = new FrameDecoder(65536, {
  frame: (f) => {
    sink += f.length;
  },
  refused: () => {
    throw new Error('refused a well-formed frame');
  },
});
const steps: Record<string, () => void> = {
  'cut frames (FrameDecoder)': () => decoder.push(read),
  'parse request (parseRequestFrame)': () => {
    for (let i = 0; i < PER_READ; i++) sink += parseRequestFrame(frame).ok ? 1 : 0;
  },
  'encode broadcast (serializeLine + Buffer.from)': () => {
    for (let i = 0; i < PER_READ; i++) sink += Buffer.from(serializeLine(chat)).length;
  },
  'encode broadcast (the TCP encoder, plain chat straight to bytes)': () => {
    for (let i = 0; i < PER_READ; i++) sink += jsonLines(chat).length;
  },
};

const best = bestNsPerCall(steps, { rounds: 3, warmup: 2000, reps: 20_000 });
for (const [name, ns] of best)
  console.log(`${(ns / PER_READ).toFixed(0).padStart(6)} ns/msg  ${name}`);
if (sink === 0) console.log('');
