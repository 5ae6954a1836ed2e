// The round-trip time to the server: measured and shown in the header while connected, and
// watched, so that a connection that died without closing is given up on.
import { Cmd } from '../../src/protocol/codes.js';
import { asNumber } from '../../src/protocol/coerce.js';
import { rttBox } from './dom.js';
import { notice } from './rooms.js';
import { connection } from './state.js';

let rttTimer: ReturnType<typeof setInterval> | undefined;
/** When the RTT still unanswered was asked (performance.now()). */
let rttAskedAt: number | undefined;
/** The RTT is measured this often while connected. */
const RTT_EVERY_MS = 10_000;
/** An RTT unanswered this long means a connection that died without closing. */
const RTT_DEAD_MS = 15_000;

/** A connection just joined: its RTT is watched from now, every RTT_EVERY_MS. */
export function startRttWatch(): void {
  clearInterval(rttTimer);
  rttAskedAt = undefined;
  rttTimer = setInterval(watchRtt, RTT_EVERY_MS);
}

/** Not connected: no RTT is watched, or shown. */
export function stopRttWatch(): void {
  clearInterval(rttTimer);
  rttBox.textContent = '';
}

/** The page's own RTT, shown in the header; while it is unanswered, rttAskedAt says since when. */
export async function askRtt(): Promise<void> {
  rttAskedAt = performance.now();
  try {
    await measureRtt(false);
  } finally {
    rttAskedAt = undefined;
  }
}

/** Each tick: an RTT unanswered for RTT_DEAD_MS means a connection dead without having closed. */
function watchRtt(): void {
  if (rttAskedAt === undefined) {
    // A drop between two ticks is reported by the status, not as an unhandled rejection.
    askRtt().catch(() => {});
  } else if (connection.waiting > 0) {
    // Still queued behind a paste the flood limit paces: not sent, so not unanswered yet.
    rttAskedAt = performance.now();
  } else if (performance.now() - rttAskedAt > RTT_DEAD_MS) {
    rttAskedAt = undefined;
    connection.abandon();
  }
}

export async function measureRtt(announce: boolean): Promise<void> {
  const begin = performance.timeOrigin + performance.now();
  const reply = await connection.call({ cmd: Cmd.RTT, beginTime: begin }, !announce);
  const ms = performance.timeOrigin + performance.now() - asNumber(reply.beginTime);
  rttBox.textContent = `RTT ${ms.toFixed(1)} ms`;
  if (announce) notice(`RTT: ${ms.toFixed(3)} ms`);
}
