import { Redis } from './ioredis.js';

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

/**
 * A client for commands (subscriptions need their own), as every Redis part of confab asks
 * for one: RESP2, whose reply shapes and Lua conversions the scripts are read in (ioredis 6
 * negotiates RESP3 by default); the commands of one event-loop turn in one write, but for
 * `unpipelined` (commands by name, scripts by the names they are defined under, written at
 * once: see redis-presence.ts's UNPIPELINED_SCRIPTS); and no resending on reconnect, since a
 * command whose reply was lost (a claim, an append, a PUBLISH) may have been applied. Its
 * caller sees the error instead, also for the commands ioredis would otherwise forget
 * (failUnanswered).
 */
export function commandClient(url: string, unpipelined: readonly string[] = []): Redis {
  return failUnanswered(
    new Redis(url, {
      protocol: 2,
      enableAutoPipelining: true,
      autoPipeliningIgnoredCommands: [...unpipelined],
      autoResendUnfulfilledCommands: false,
      retryStrategy: reconnectDelay,
      disconnectTimeout: DISCONNECT_MS,
    }),
  );
}

/**
 * How long a connection being closed waits for Redis to close its side before it is
 * destroyed. ioredis waits 2 s, and a node stopping while Redis stalls (nothing answered,
 * not even the close) stayed that long after it had given up on Redis.
 */
export const DISCONNECT_MS = 100;

/**
 * A request waiting for Redis fails after ioredis's 20 reconnect attempts: at 50 ms more
 * each, up to 2 s, that is about ten seconds (docs/cluster.md). ioredis 6's own doubling
 * to 5 s made it over a minute, a room on an instance that is down answering nobody and
 * a node told to stop waiting that long for its last appends.
 */
export function reconnectDelay(attempt: number): number {
  return Math.min(attempt * 50, 2_000);
}
