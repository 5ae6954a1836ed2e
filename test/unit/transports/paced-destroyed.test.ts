/**
 * Paced sending stops once its socket is destroyed, whatever its connection says: a destroyed
 * socket "drains" at once, so a connection still reporting itself open (a WebSocket until its
 * socket's 'close') would have the loop go round on microtasks alone, starving the process.
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { type StreamLimits, sendPacedOn } from '../../../src/transports/stream.js';

describe('sendPacedOn', () => {
  it('stops on a destroyed socket while its connection still says it is open', async () => {
    const socket = new net.Socket();
    socket.destroy();
    let asked = 0;
    let sent = 0;
    const limits = { maxQueue: 1_000, stallTimeoutMs: 60_000 } as StreamLimits;
    await sendPacedOn(
      socket,
      limits,
      {
        // Bounded here, so that the loop this guards against ends the test rather than hangs it.
        stopped: () => ++asked > 10_000,
        // Above half of --max-queue: the delivery waits for the queue to drain.
        queued: () => 900,
        size: () => 10,
        send: () => {
          sent++;
        },
        cutOff: () => {},
      },
      [{} as never, {} as never],
    );
    expect(asked).toBeLessThanOrEqual(1);
    expect(sent).toBe(0);
  });
});
