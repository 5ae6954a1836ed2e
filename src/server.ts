import { readFile } from 'node:fs/promises';
import type { Config } from './config.js';
import { BannedWords, DEFAULT_BANNED_WORDS } from './core/banned-words.js';
import { Chat } from './core/chat.js';
import type { Logger, PeerAddress } from './core/ports.js';
import { type StreamLimits, TcpListener } from './transports/tcp.js';

/** The composition root: builds the chat service and its listeners from a Config. */
export class ConfabServer {
  private constructor(
    readonly chat: Chat,
    private readonly tcp: TcpListener,
    readonly address: PeerAddress,
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  static async start(config: Config, log: Logger): Promise<ConfabServer> {
    const bannedWords =
      config.bannedWords === undefined
        ? new BannedWords(DEFAULT_BANNED_WORDS)
        : BannedWords.fromText(await readFile(config.bannedWords, 'utf8'));
    const chat = new Chat({
      maxUsers: config.maxUsers,
      bannedWords,
      hideAddresses: config.hideAddresses,
      logger: log,
    });
    const limits: StreamLimits = {
      maxFrame: config.maxFrame,
      maxQueue: config.maxQueue,
      closeTimeoutMs: config.shutdownTimeout * 1000,
      keepAliveMs: 60_000,
    };
    const tcp = new TcpListener(chat, { host: config.host, port: config.port, limits }, log);
    const address = await tcp.listen();
    log.info(
      { transport: 'tcp', address: address.ip, port: address.port, maxUsers: config.maxUsers },
      `The server socket is listening on ('${address.ip}', ${address.port})`,
    );
    return new ConfabServer(chat, tcp, address, config, log);
  }

  /**
   * Graceful stop: stop accepting, tell every client, let queued messages
   * flush for up to --shutdown-timeout, then close whatever is left.
   */
  async stop(): Promise<void> {
    const closed = this.tcp.close();
    this.chat.shutdown();
    await closed;
    this.log.debug({ timeout: this.config.shutdownTimeout }, 'all connections closed');
  }
}
