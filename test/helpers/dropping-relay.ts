/**
 * A relay between a confab node and Redis that loses one write, as a connection that drops
 * at the wrong moment does (`CLIENT KILL`, a network blip): for the tests of what a node
 * does when a command or a message it sent or was sent never arrives.
 */
import net from 'node:net';
import { afterAll, beforeAll } from 'vitest';
import { RawClient } from './raw-client.js';
import { type RedisServer, startRedis, withoutRedis } from './redis.js';
import { type SpawnedServer, spawnServer } from './spawn-server.js';

/**
 * Relays a node's connections to Redis. Armed with a needle, it drops the first write that
 * carries it, from the node (`'up'`) or to it (`'down'`), unsent, and closes that
 * connection both ways.
 */
export class DroppingRelay {
  private needle: string | undefined;
  private direction: 'up' | 'down' = 'up';
  private fired: (() => void) | undefined;
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(redisPort: number): Promise<DroppingRelay> {
    let relay: DroppingRelay | undefined;
    const server = net.createServer((client) => relay?.relay(client, redisPort));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    relay = new DroppingRelay(server, (server.address() as net.AddressInfo).port);
    return relay;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Resolves once a write carrying `needle` was dropped. */
  arm(needle: string, direction: 'up' | 'down' = 'up'): Promise<void> {
    return new Promise((fired) => {
      this.needle = needle;
      this.direction = direction;
      this.fired = fired;
    });
  }

  private relay(client: net.Socket, redisPort: number): void {
    const upstream = net.connect({ host: '127.0.0.1', port: redisPort });
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('error', drop);
      socket.on('close', () => {
        this.sockets.delete(socket);
        drop();
      });
    }
    const pass = (direction: 'up' | 'down', to: net.Socket) => (chunk: Buffer) => {
      const needle = this.needle;
      if (
        needle !== undefined &&
        this.direction === direction &&
        chunk.toString('latin1').includes(needle)
      ) {
        this.needle = undefined;
        drop();
        this.fired?.();
        return;
      }
      to.write(chunk);
    };
    client.on('data', pass('up', upstream));
    upstream.on('data', pass('down', client));
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * For a test file: a Redis and two confab nodes, node `via` reaching Redis through a
 * DroppingRelay, the other directly; clients opened here are closed after the file.
 */
export function useDroppingCluster(via: 0 | 1, caps: readonly string[]) {
  let redis: RedisServer | undefined;
  let relay: DroppingRelay | undefined;
  const nodes: SpawnedServer[] = [];
  const clients: RawClient[] = [];

  beforeAll(async () => {
    if (withoutRedis()) return;
    redis = await startRedis();
    relay = await DroppingRelay.start(redis.port);
    const urls = via === 0 ? [relay.url, redis.url] : [redis.url, relay.url];
    for (const url of urls) {
      nodes.push(
        await spawnServer(['--redis', url, '--cluster-timeout', '5', '--rate-limit', '0']),
      );
    }
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await relay?.close();
    await redis?.stop();
  }, 60_000);

  const open = async (node: number): Promise<RawClient> => {
    const c = await RawClient.open(nodes[node]!.port);
    clients.push(c);
    return c;
  };

  return {
    get relay(): DroppingRelay {
      if (relay === undefined) throw new Error('the cluster is not started');
      return relay;
    },
    open,
    /** A client on `node` that has CONNECTed as `nickname` (with `caps`, by default the file's). */
    async member(node: number, nickname: string, asked = caps): Promise<RawClient> {
      const c = await open(node);
      c.sendPy({ cmd: '0', nickname, caps: asked });
      await c.expect('03', 10_000);
      return c;
    },
  };
}
