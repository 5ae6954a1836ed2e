import net from 'node:net';

/** Which way a chunk goes: from a client to the server (`up`), or back (`down`). */
export type Direction = 'up' | 'down';

/**
 * What `arm` does to the chunk that carries its needle:
 * - `drop`: the chunk is lost, unsent, and its connection closed both ways;
 * - `reset`: the chunk is relayed, then the client's side closed at once and the server's half
 *   a second later (the server still runs the request; its client never reads the answer);
 * - `stall`: the chunk is relayed, then nothing more either way for `stallMs`, then the
 *   connection is closed both ways.
 */
export type Fault = 'drop' | 'reset' | 'stall';

export interface ArmOptions {
  /** Whose chunks are looked at (default `up`, what the clients send). */
  direction?: Direction;
  /** How many chunks carrying the needle the fault hits (a retry carries it too); default 1. */
  times?: number;
  /** For `stall`: how long nothing is relayed before the connection closes. */
  stallMs?: number;
}

/** One relayed connection: the client's socket and the relay's own to the server. */
interface Link {
  client: net.Socket;
  upstream: net.Socket;
  /** The server's replies are not read (holdReplies). */
  repliesHeld: boolean;
  /** A fault hit it: nothing more is relayed, and its own timer closes it. */
  faulted: boolean;
  /** What went through each way lately, for a needle cut across two chunks. */
  tail: Record<Direction, string>;
}

interface Trap {
  needle: string;
  fault: Fault;
  direction: Direction;
  times: number;
  stallMs: number;
  fired: () => void;
}

/**
 * A TCP relay between clients and a server on 127.0.0.1 (a chat client and a node, a node or
 * a Presence and Redis): the tests' one way to make a connection fail as a network does, at
 * the moment a test chooses. It cuts connections (both ends at once, or only the client's,
 * leaving the server a half-open ghost), holds replies back, keeps new connections waiting,
 * and drops, resets or stalls a connection at the chunk that carries a given text.
 */
export class TcpRelay {
  private readonly links = new Set<Link>();
  /** Every socket the relay has, ghosts and waiting clients too, for `close`. */
  private readonly sockets = new Set<net.Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  /** While held: new connections, accepted but not yet relayed. */
  private waiting: net.Socket[] | undefined;
  private trap: Trap | undefined;
  /** How long every chunk waits before it is relayed, either way (`slow`). */
  private delayMs = 0;
  private readonly server: net.Server;
  port = 0;

  private constructor(private readonly upstreamPort: number) {
    this.server = net.createServer((client) => {
      this.track(client);
      if (this.waiting === undefined) this.relay(client);
      else {
        client.pause();
        this.waiting.push(client);
      }
    });
  }

  static async start(upstreamPort: number): Promise<TcpRelay> {
    const relay = new TcpRelay(upstreamPort);
    await new Promise<void>((resolve) => relay.server.listen(0, '127.0.0.1', resolve));
    relay.port = (relay.server.address() as net.AddressInfo).port;
    return relay;
  }

  /** The relay as a Redis URL, for a server that is a redis-server. */
  get redisUrl(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Connections open through the relay (stranded ones not counted). */
  get open(): number {
    return this.links.size;
  }

  /** Connections that wait (see `hold`). */
  get held(): number {
    return this.waiting?.filter((c) => !c.destroyed).length ?? 0;
  }

  /**
   * Hits the next chunk (or `times` chunks) going `direction` that carries `needle` with
   * `fault`, on whichever connection it goes; resolves once it has.
   */
  arm(needle: string, fault: Fault = 'drop', options: ArmOptions = {}): Promise<void> {
    const { direction = 'up', times = 1, stallMs = 0 } = options;
    return new Promise((fired) => {
      this.trap = { needle, fault, direction, times, stallMs, fired };
    });
  }

  /** Destroys every connection through the relay, both sides. */
  cut(): void {
    for (const link of [...this.links]) this.destroy(link);
  }

  /**
   * Closes the clients' side only: the server keeps a connection that still looks alive,
   * from which nothing is read any more.
   */
  strand(): void {
    for (const link of [...this.links]) {
      this.links.delete(link);
      link.upstream.pause();
      link.client.destroy();
    }
  }

  /**
   * Stops relaying what the server sends, while the clients' requests still go through: a
   * reply lost on the way, as when the connection dies just after the server handled a
   * request.
   */
  holdReplies(): void {
    for (const link of this.links) {
      link.repliesHeld = true;
      link.upstream.pause();
    }
  }

  /**
   * New connections wait, accepted but not relayed, until `release`: a client that
   * reconnects meanwhile stays cut off, for as long as a test needs, while the connections
   * already open go on.
   */
  hold(): void {
    this.waiting ??= [];
  }

  /**
   * Relays every chunk `ms` late, in order, both ways: a link with that much latency each way
   * (a round trip of twice it). Not for use with `arm`, whose faults hit chunks on arrival.
   */
  slow(ms: number): void {
    this.delayMs = ms;
  }

  /** Relays the connections that waited, and new ones again. */
  release(): void {
    const waiting = this.waiting ?? [];
    this.waiting = undefined;
    for (const client of waiting) if (!client.destroyed) this.relay(client);
  }

  /** Ends every connection, ghost and timer, and stops listening; once is enough. */
  async close(): Promise<void> {
    this.waiting = undefined;
    this.trap = undefined;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    for (const socket of this.sockets) socket.destroy();
    if (!this.server.listening) return;
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Counts `socket` among the relay's, with an `error` handler from its first moment. */
  private track(socket: net.Socket): net.Socket {
    this.sockets.add(socket);
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.sockets.delete(socket));
    return socket;
  }

  private relay(client: net.Socket): void {
    const upstream = this.track(net.connect({ host: '127.0.0.1', port: this.upstreamPort }));
    const link: Link = {
      client,
      upstream,
      repliesHeld: false,
      faulted: false,
      tail: { up: '', down: '' },
    };
    this.links.add(link);
    // One side closing closes the other, unless a fault or `strand` decides when.
    for (const socket of [client, upstream]) {
      socket.on('close', () => {
        if (this.links.has(link) && !link.faulted) this.destroy(link);
      });
    }
    this.forward(link, 'up', client, upstream);
    this.forward(link, 'down', upstream, client);
    client.resume();
  }

  private forward(link: Link, direction: Direction, from: net.Socket, to: net.Socket): void {
    from.on('data', (chunk: Buffer) => {
      if (link.faulted) return;
      if (this.delayMs > 0) {
        // Equal delays fire in the order they were set: the stream stays in order.
        this.later(() => {
          if (!to.destroyed) to.write(chunk);
        }, this.delayMs);
        return;
      }
      const trap = this.caught(link, direction, chunk);
      if (trap?.fault !== 'drop') {
        // Back-pressure as a pipe has it; held replies stay unread.
        if (!to.write(chunk)) {
          from.pause();
          to.once('drain', () => {
            if (direction === 'up' || !link.repliesHeld) from.resume();
          });
        }
      }
      if (trap !== undefined) this.fault(link, trap);
    });
  }

  /** The armed trap, when `chunk` (with what went before it) carries its needle. */
  private caught(link: Link, direction: Direction, chunk: Buffer): Trap | undefined {
    const trap = this.trap;
    if (trap?.direction !== direction) return undefined;
    const text = link.tail[direction] + chunk.toString('latin1');
    link.tail[direction] = text.slice(-trap.needle.length);
    if (!text.includes(trap.needle)) return undefined;
    link.tail[direction] = '';
    if (--trap.times === 0) this.trap = undefined;
    return trap;
  }

  private fault(link: Link, trap: Trap): void {
    link.faulted = true;
    if (trap.fault === 'drop') this.destroy(link);
    else if (trap.fault === 'reset') {
      this.links.delete(link);
      link.client.destroy();
      this.later(() => link.upstream.destroy(), 500);
    } else this.later(() => this.destroy(link), trap.stallMs);
    trap.fired();
  }

  private destroy(link: Link): void {
    this.links.delete(link);
    link.client.destroy();
    link.upstream.destroy();
  }

  private later(work: () => void, ms: number): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      work();
    }, ms);
    this.timers.add(timer);
  }
}
