import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from './config.js';
import { BannedWords, DEFAULT_BANNED_WORDS } from './core/banned-words.js';
import { Chat } from './core/chat.js';
import type { Logger, PeerAddress } from './core/ports.js';
import { createMetrics } from './metrics.js';
import { HttpListener } from './transports/http.js';
import type { TransportStats } from './transports/stats.js';
import { type StreamLimits, StreamListener } from './transports/stream.js';

/** dist/web from both src/server.ts (tests) and dist/server.js (production). */
const WEB_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'web');

interface Listener {
  listen(): Promise<PeerAddress>;
  close(): Promise<void>;
}

/** The composition root: builds the chat service and its listeners from a Config. */
export class ConfabServer {
  private constructor(
    readonly chat: Chat,
    private readonly listeners: Listener[],
    /** The plain TCP listener's address. */
    readonly address: PeerAddress,
    /** The TLS listener's address, when --tls-port is set. */
    readonly tlsAddress: PeerAddress | undefined,
    /** The HTTP/WebSocket listener's address, unless --http-port is off. */
    readonly httpAddress: PeerAddress | undefined,
  ) {}

  static async start(config: Config, log: Logger): Promise<ConfabServer> {
    const bannedWords =
      config.bannedWords === undefined
        ? new BannedWords(DEFAULT_BANNED_WORDS)
        : BannedWords.fromText(await readFile(config.bannedWords, 'utf8'));
    const tls =
      config.tlsPort === undefined || config.tlsCert === undefined || config.tlsKey === undefined
        ? undefined
        : { cert: await readFile(config.tlsCert), key: await readFile(config.tlsKey) };
    const chat = new Chat({
      maxUsers: config.maxUsers,
      bannedWords,
      hideAddresses: config.hideAddresses,
      maxMessage: config.maxMessage,
      rateLimit: config.rateLimit,
      rateBurst: config.rateBurst,
      maxConnections: config.maxConns,
      maxConnectionsPerIp: config.maxConnsPerIp,
      logger: log,
    });
    const limits: StreamLimits = {
      maxFrame: config.maxFrame,
      maxQueue: config.maxQueue,
      closeTimeoutMs: config.shutdownTimeout * 1000,
      keepAliveMs: config.keepalive * 1000,
      handshakeTimeoutMs: config.handshakeTimeout * 1000,
    };
    const listeners: Listener[] = [];
    const stats: TransportStats[] = [];
    /** Starts one listener; if it cannot bind, closes those already open. */
    const start = async (
      listener: Listener & { stats: TransportStats },
      transport: string,
      describe: (a: PeerAddress) => string,
      fields: object = {},
    ) => {
      let bound: PeerAddress;
      try {
        bound = await listener.listen();
      } catch (err) {
        await Promise.all(listeners.map((l) => l.close()));
        throw err;
      }
      listeners.push(listener);
      stats.push(listener.stats);
      log.info({ transport, address: bound.ip, port: bound.port, ...fields }, describe(bound));
      return bound;
    };

    const address = await start(
      new StreamListener(chat, { host: config.host, port: config.port, limits }, log),
      'tcp',
      (a) => `The server socket is listening on ('${a.ip}', ${a.port})`,
      { maxUsers: config.maxUsers },
    );
    const tlsAddress =
      tls === undefined || config.tlsPort === undefined
        ? undefined
        : await start(
            new StreamListener(chat, { host: config.host, port: config.tlsPort, limits, tls }, log),
            'tls',
            (a) => `TLS listening on ('${a.ip}', ${a.port})`,
          );
    const httpAddress =
      config.httpPort < 0
        ? undefined
        : await start(
            new HttpListener(
              chat,
              {
                host: config.host,
                port: config.httpPort,
                limits,
                webRoot: WEB_ROOT,
                allowedOrigins: config.allowedOrigins
                  .split(',')
                  .map((o) => o.trim())
                  .filter((o) => o !== ''),
                // Reads `stats` when scraped, by which time every listener is in it.
                metrics: createMetrics(chat, stats),
                health: () => ({ users: chat.lobby.size, connections: chat.connectionCount }),
              },
              log,
            ),
            'http',
            (a) => `Web app on http://${a.ip}:${a.port}/`,
          );
    return new ConfabServer(chat, listeners, address, tlsAddress, httpAddress);
  }

  /**
   * Graceful stop: stop accepting, tell every client, let queued messages
   * flush for up to --shutdown-timeout, then close whatever is left.
   */
  async stop(): Promise<void> {
    const closed = Promise.all(this.listeners.map((l) => l.close()));
    this.chat.shutdown();
    await closed;
  }
}
