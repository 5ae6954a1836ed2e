import type { Redis } from 'ioredis';

/** A command ioredis wrote and holds until its reply comes. */
interface Pending {
  readonly command: { reject(error: Error): void };
}

/** What this reaches into: the queue (a Denque) of commands a dropped connection left unanswered. */
interface Unanswered {
  prevCommandQueue?: { readonly length: number; shift(): Pending | undefined } | null;
}

/**
 * A client made with `autoResendUnfulfilledCommands: false` (a reply lost may mean the
 * command was applied: a claim, an append) must still see those commands fail. ioredis 6
 * instead forgets them on reconnect, and their promises never settle: a heartbeat, a
 * claim or an append written just before Redis restarted would wait for good (the node's
 * heartbeats stop, the member's requests stay queued). Rejected here as the client starts
 * reconnecting, so every caller sees the error it is written to handle.
 */
export function failUnanswered(redis: Redis): Redis {
  redis.on('reconnecting', () => {
    const client = redis as unknown as Unanswered;
    const lost = client.prevCommandQueue;
    if (lost === undefined || lost === null) return;
    client.prevCommandQueue = null;
    const error = new Error('the connection to Redis closed before the reply');
    // Bounded by what was written before the connection dropped.
    for (let item = lost.shift(); item !== undefined; item = lost.shift()) {
      item.command.reject(error);
    }
  });
  return redis;
}
