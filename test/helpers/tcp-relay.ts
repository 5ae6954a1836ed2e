import net from 'node:net';

type Pair = { client: net.Socket; upstream: net.Socket };

/**
 * A TCP relay between clients and a server on 127.0.0.1, so a test can cut a
 * client's connection the way a network does: both ends at once (cut), or
 * only the client's side, leaving the server holding a half-open ghost
 * (strand).
 */
export class TcpRelay {
  private readonly pairs = new Set<Pair>();
  private readonly ghosts = new Set<net.Socket>();
  private readonly server: net.Server;
  port = 0;

  private constructor(upstreamPort: number) {
    this.server = net.createServer((client) => {
      const upstream = net.connect({ host: '127.0.0.1', port: upstreamPort });
      const pair = { client, upstream };
      this.pairs.add(pair);
      client.pipe(upstream);
      upstream.pipe(client);
      const drop = () => {
        // A stranded pair keeps its upstream open on purpose.
        if (!this.pairs.delete(pair)) return;
        client.destroy();
        upstream.destroy();
      };
      for (const socket of [client, upstream]) {
        socket.on('error', drop);
        socket.on('close', drop);
      }
    });
  }

  static async start(upstreamPort: number): Promise<TcpRelay> {
    const relay = new TcpRelay(upstreamPort);
    await new Promise<void>((resolve) => relay.server.listen(0, '127.0.0.1', resolve));
    relay.port = (relay.server.address() as net.AddressInfo).port;
    return relay;
  }

  /** Connections open through the relay (stranded ones not counted). */
  get open(): number {
    return this.pairs.size;
  }

  /** Destroys every connection through the relay, both sides. */
  cut(): void {
    for (const pair of [...this.pairs]) {
      this.pairs.delete(pair);
      pair.client.destroy();
      pair.upstream.destroy();
    }
  }

  /**
   * Closes the clients' side only: the server keeps a connection that still
   * looks alive, from which nothing is read any more.
   */
  strand(): void {
    for (const pair of [...this.pairs]) {
      this.pairs.delete(pair);
      pair.client.unpipe(pair.upstream);
      pair.upstream.unpipe(pair.client);
      pair.upstream.pause();
      pair.client.destroy();
      this.ghosts.add(pair.upstream);
    }
  }

  /**
   * Stops relaying what the server sends, while the clients' requests still
   * go through: a reply lost on the way, as when the connection dies just
   * after the server handled a request.
   */
  holdReplies(): void {
    for (const pair of this.pairs) pair.upstream.unpipe(pair.client);
  }

  async stop(): Promise<void> {
    this.cut();
    for (const ghost of this.ghosts) ghost.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
