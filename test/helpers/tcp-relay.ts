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
  /** While held: new connections, accepted but not yet relayed. */
  private waiting: net.Socket[] | undefined;
  private readonly server: net.Server;
  port = 0;

  private constructor(private readonly upstreamPort: number) {
    this.server = net.createServer((client) => {
      if (this.waiting !== undefined) {
        client.pause();
        client.on('error', () => client.destroy());
        this.waiting.push(client);
        return;
      }
      this.relay(client);
    });
  }

  private relay(client: net.Socket): void {
    const upstream = net.connect({ host: '127.0.0.1', port: this.upstreamPort });
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
  }

  /**
   * New connections wait, accepted but not relayed, until `release`: a
   * client that reconnects meanwhile stays cut off, for as long as a test
   * needs, while the connections already open go on.
   */
  hold(): void {
    this.waiting ??= [];
  }

  /** Connections that wait (see `hold`). */
  get held(): number {
    return this.waiting?.filter((c) => !c.destroyed).length ?? 0;
  }

  /** Relays the connections that waited, and new ones again. */
  release(): void {
    const waiting = this.waiting ?? [];
    this.waiting = undefined;
    for (const client of waiting) {
      client.removeAllListeners('error');
      if (!client.destroyed) this.relay(client);
    }
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
    for (const client of this.waiting ?? []) client.destroy();
    this.waiting = undefined;
    this.cut();
    for (const ghost of this.ghosts) ghost.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
