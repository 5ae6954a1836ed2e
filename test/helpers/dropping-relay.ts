/**
 * A relay between a confab node and Redis that loses one write, as a connection that drops
 * at the wrong moment does (`CLIENT KILL`, a network blip): for the tests of what a node
 * does when a command or a message it sent or was sent never arrives.
 */
import net from 'node:net';

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
