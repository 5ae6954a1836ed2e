import { readFile } from 'node:fs/promises';
import type { Config } from './config.js';
import { BannedWords, DEFAULT_BANNED_WORDS } from './core/banned-words.js';
import { Chat } from './core/chat.js';
import type { Logger, PeerAddress } from './core/ports.js';
import { type StreamLimits, StreamListener } from './transports/stream.js';

/** The composition root: builds the chat service and its listeners from a Config. */
export class ConfabServer {
  private constructor(
    readonly chat: Chat,
    private readonly listeners: StreamListener[],
    /** The plain TCP listener's address. */
    readonly address: PeerAddress,
    /** The TLS listener's address, when --tls-port is set. */
    readonly tlsAddress: PeerAddress | undefined,
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
    const listeners = [tcp];
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
        await tcp.close();
        throw err;
      }
      listeners.push(secure);
      log.info(
        { transport: 'tls', address: tlsAddress.ip, port: tlsAddress.port },
        `TLS listening on ('${tlsAddress.ip}', ${tlsAddress.port})`,
      );
    }
    return new ConfabServer(chat, listeners, address, tlsAddress);
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
