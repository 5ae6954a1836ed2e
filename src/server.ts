import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from './config.js';
import { BannedWords, DEFAULT_BANNED_WORDS } from './core/banned-words.js';
import { Chat } from './core/chat.js';
import type { Logger, PeerAddress } from './core/ports.js';
import { createMetrics } from './metrics.js';
import { HttpListener } from './transports/http.js';
import { type StreamLimits, StreamListener } from './transports/stream.js';

/** dist/web from both src/server.ts (tests) and dist/server.js (production). */
const WEB_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'web');

interface Listener {
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
    /** The HTTP/WebSocket listener's address, unless --http-port is -1. */
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
    const tcp = new StreamListener(chat, { host: config.host, port: config.port, limits }, log);
    const listeners: Listener[] = [tcp];
    const stats = [tcp.stats];
    const address = await tcp.listen();
    log.info(
      { transport: 'tcp', address: address.ip, port: address.port, maxUsers: config.maxUsers },
      `The server socket is listening on ('${address.ip}', ${address.port})`,
    );
    let tlsAddress: PeerAddress | undefined;
    if (tls !== undefined && config.tlsPort !== undefined) {
      const secure = new StreamListener(
        chat,
        { host: config.host, port: config.tlsPort, limits, tls },
        log,
      );
      try {
        tlsAddress = await secure.listen();
      } catch (err) {
        await Promise.all(listeners.map((l) => l.close()));
        throw err;
      }
      listeners.push(secure);
      stats.push(secure.stats);
      log.info(
        { transport: 'tls', address: tlsAddress.ip, port: tlsAddress.port },
        `TLS listening on ('${tlsAddress.ip}', ${tlsAddress.port})`,
      );
    }
    let httpAddress: PeerAddress | undefined;
    if (config.httpPort >= 0) {
      const metrics = createMetrics(chat, stats);
      const web = new HttpListener(
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
          metrics: async () => ({ contentType: metrics.contentType, body: await metrics.text() }),
          health: () => ({ users: chat.lobby.size, connections: chat.connectionCount }),
        },
        log,
      );
      stats.push(web.stats);
      let bound: PeerAddress;
      try {
        bound = await web.listen();
      } catch (err) {
        await Promise.all(listeners.map((l) => l.close()));
        throw err;
      }
      httpAddress = bound;
      listeners.push(web);
      log.info(
        { transport: 'http', address: bound.ip, port: bound.port },
        `Web app on http://${bound.ip}:${bound.port}/`,
      );
    }
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
