import net from 'node:net';
import { cpuMicros } from './proc.js';

/** A cluster's Redis, as the harness started it. */
export interface BenchRedis {
  pid: number;
  port: number;
}

/** What a cluster's Redis did in a measurement window (its CPU is in the server's too). */
export interface RedisShare {
  cpuPct: number;
  usPerChat: number;
  usPerDelivery: number;
  /**
   * Per command Redis ran inside or beside the append script: calls and µs
   * per chat, from INFO commandstats (`evalsha`'s time includes its calls').
   */
  commands: Record<string, { callsPerChat: number; usPerChat: number }>;
}

/** Sends one inline command on a new connection and returns the reply's first bulk or line. */
export function redisCommand(port: number, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let reply = Buffer.alloc(0);
    socket.setTimeout(5_000, () => {
      socket.destroy();
      reject(new Error(`Redis on ${port}: no reply to ${command}`));
    });
    socket.once('error', reject);
    socket.once('connect', () => socket.write(`${command}\r\n`));
    socket.on('data', (chunk: Buffer) => {
      reply = Buffer.concat([reply, chunk]);
      const eol = reply.indexOf('\r\n');
      if (eol < 0) return;
      const head = reply.toString('latin1', 0, eol);
      let body: string | undefined;
      if (head.startsWith('$')) {
        const length = Number(head.slice(1));
        if (reply.length < eol + 2 + length) return;
        body = reply.toString('utf8', eol + 2, eol + 2 + length);
      } else {
        body = head;
      }
      socket.destroy();
      resolve(body);
    });
  });
}

/** True once Redis answers PING with PONG (a Redis still loading answers -LOADING). */
export function redisPing(port: number): Promise<boolean> {
  return redisCommand(port, 'PING').then(
    (reply) => reply === '+PONG',
    () => false,
  );
}

type CommandStats = Map<string, { calls: number; usec: number }>;

async function commandStats(port: number): Promise<CommandStats> {
  const info = await redisCommand(port, 'INFO commandstats');
  const stats: CommandStats = new Map();
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    stats.set(m[1]!, { calls: Number(m[2]), usec: Number(m[3]) });
  }
  return stats;
}

/**
 * Opens a measurement window on a cluster's Redis: `close` reads its CPU at
 * once (call it where the server's CPU is read), then its command counts.
 */
export async function openRedisWindow(redis: BenchRedis) {
  const before = await commandStats(redis.port);
  const cpu0 = cpuMicros(redis.pid);
  return {
    async close(elapsed: number, chats: number, deliveries: number): Promise<RedisShare> {
      const cpu = cpuMicros(redis.pid) - cpu0;
      // Left pending while the run drains, so it must not reject: without
      // its counts the CPU figures still stand.
      const after = await commandStats(redis.port).catch((): CommandStats => new Map());
      const commands: RedisShare['commands'] = {};
      for (const [name, s] of after) {
        const calls = s.calls - (before.get(name)?.calls ?? 0);
        const usec = s.usec - (before.get(name)?.usec ?? 0);
        // The harness's own INFO and the nodes' heartbeats are not per chat; the append
        // script and its PUBLISH run once per batch of up to 64 chats.
        if (chats === 0 || calls < chats / 100) continue;
        commands[name] = { callsPerChat: calls / chats, usPerChat: usec / chats };
      }
      return {
        cpuPct: (cpu / (elapsed * 1e6)) * 100,
        usPerChat: chats > 0 ? cpu / chats : Number.NaN,
        usPerDelivery: deliveries > 0 ? cpu / deliveries : Number.NaN,
        commands,
      };
    },
  };
}
