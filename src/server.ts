import { createHash, randomUUID, X509Certificate } from 'node:crypto';
import { statSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createSecureContext } from 'node:tls';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import { RedisBroker } from './cluster/redis-broker.js';
import { CLOCK_SYNC_MS, CLOCK_TOLERANCE_MS, RedisClock } from './cluster/redis-clock.js';
import { REFILL_MS, RedisPresence, UNPIPELINED_SCRIPTS } from './cluster/redis-presence.js';
import {
  agreeOnShards,
  freshState,
  ShardedBroker,
  ShardedHistoryStore,
  sameServer,
  shardListHash,
} from './cluster/shards.js';
import {
  type Config,
  configKey,
  envName,
  isFileKey,
  isLive,
  OPTION_NAMES,
  type OptionName,
  shardUrls,
} from './config.js';
import { BannedWords, DEFAULT_BANNED_WORDS } from './core/banned-words.js';
import type { Broker } from './core/broker.js';
import { Chat, type ChatSettings, type Cluster } from './core/chat.js';
import type { HistoryStore } from './core/history.js';
import type { Operator } from './core/moderation.js';
import type { Logger, PeerAddress } from './core/ports.js';
import { type Census, PresenceKeeper, type SentHeartbeat } from './core/presence.js';
import { TimeoutError, withTimeout } from './core/timeout.js';
import { type ClusterView, createMetrics, ReloadOutcome } from './metrics.js';
import { verifyPassword } from './password.js';
import { isRegularFile, readCapped, readError } from './read-capped.js';
import { FileBanStore } from './store/ban-file.js';
import { senderOrigin } from './store/common.js';
import { DataDirLock } from './store/data-dir-lock.js';
import { FileLock } from './store/file-lock.js';
import { MemoryHistoryStore } from './store/memory-history.js';
import { commandClient } from './store/redis-client.js';
import { RedisHistoryStore } from './store/redis-history.js';
import { SqliteHistoryStore } from './store/sqlite-history.js';
import { Backlogs } from './transports/backlogs.js';
import { HttpListener } from './transports/http.js';
import { PartialFrames } from './transports/partial-frames.js';
import type { TransportStats } from './transports/stats.js';
import { flushWrites, type StreamLimits, StreamListener } from './transports/stream.js';

/** dist/web from both src/server.ts (tests) and dist/server.js (production). */
const WEB_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'web');

interface Listener {
  listen(): Promise<PeerAddress>;
  close(): Promise<void>;
}

/** A start-up failure an operator can fix; the message is one line naming the option. */
export class StartError extends Error {
  override name = 'StartError';
}

/** What ConfabServer.reload did. */
export interface ReloadResult {
  /**
   * Options whose new values now apply: `operators` and `rooms` from the config file, and an
   * option naming a file whose contents changed.
   */
  applied: (OptionName | 'operators' | 'rooms')[];
  /** Options that changed but keep their old values until a restart. */
  needRestart: OptionName[];
  /** What is applied but will not work as the operator meant (an expired certificate). */
  warnings: string[];
}

/** More than any list of banned words needs. */
const OPTION_FILE_MAX_BYTES = 16 * 1024 * 1024;
/**
 * More than any certificate chain or key needs (a chain is a few kilobytes). Parsing one
 * holds the event loop: some 0.4 s a mebibyte of certificates.
 */
const TLS_FILE_MAX_BYTES = 1024 * 1024;

/**
 * The option files (banned words, TLS material) as a server reads them: at start any file,
 * a pipe (`<(…)`) or a terminal as it comes; on reload regular files only (read-capped.ts).
 * What was read at start from a file that is not regular is kept, and a reload uses it for as
 * long as the option names that path: such a file cannot be read again, and a reload refused
 * for it would leave every other option unchangeable until a restart.
 */
class OptionFiles {
  private running = false;
  /** Option -> the path it named at start, not a regular file, and what was read from it. */
  private readonly kept = new Map<string, { file: string; bytes: Buffer }>();
  /** Option -> a digest of what its file held when last applied, and when last read. */
  private readonly applied = new Map<OptionName, string>();
  private readonly lastRead = new Map<OptionName, string>();

  /** Reads from now on as a running server does. */
  started(): void {
    this.running = true;
    this.settle();
  }

  /** Forgets what was read since the last settle(): a reload that failed applied none of it. */
  begin(): void {
    this.lastRead.clear();
  }

  /**
   * What was read since begin() is now in effect: the options whose files' contents changed
   * (the log says so, as for options: a renewed certificate at the same path is a change).
   */
  settle(): OptionName[] {
    const changed: OptionName[] = [];
    for (const [option, digest] of this.lastRead) {
      const before = this.applied.get(option);
      if (before !== undefined && before !== digest) changed.push(option);
      this.applied.set(option, digest);
    }
    this.lastRead.clear();
    return changed;
  }

  /** Whether what was read of `option`'s file since begin() is what is in effect. */
  unchanged(option: OptionName): boolean {
    const read = this.lastRead.get(option);
    return read !== undefined && read === this.applied.get(option);
  }

  async read(option: OptionName, file: string, maxBytes = OPTION_FILE_MAX_BYTES): Promise<Buffer> {
    const kept = this.kept.get(option);
    if (this.running && kept?.file === file && !isRegularFile(file)) return kept.bytes;
    let bytes: Buffer;
    try {
      bytes = await readCapped(file, maxBytes, this.running);
    } catch (err) {
      throw new StartError(`cannot read --${option} ${file} (${readError(err)})`);
    }
    if (!this.running && !isRegularFile(file)) this.kept.set(option, { file, bytes });
    this.lastRead.set(option, createHash('sha256').update(bytes).digest('base64'));
    return bytes;
  }
}

/**
 * The TLS certificate and key, checked to be a pair; undefined without TLS, or when both files
 * hold what is in effect already (a reload then builds no new context: that is the costly
 * part, and the certificate's dates were told when it was applied).
 */
async function loadTls(
  config: Config,
  files: OptionFiles,
): Promise<{ cert: Buffer; key: Buffer } | undefined> {
  if (config.tlsPort === undefined || config.tlsCert === undefined || config.tlsKey === undefined)
    return undefined;
  const material = {
    cert: await files.read('tls-cert', config.tlsCert, TLS_FILE_MAX_BYTES),
    key: await files.read('tls-key', config.tlsKey, TLS_FILE_MAX_BYTES),
  };
  if (files.unchanged('tls-cert') && files.unchanged('tls-key')) return undefined;
  try {
    createSecureContext(material);
  } catch (err) {
    throw new StartError(
      `--tls-cert ${config.tlsCert} and --tls-key ${config.tlsKey} are not a PEM certificate and its key (${(err as Error).message}); are they the wrong way round?`,
    );
  }
  return material;
}

/**
 * What the certificate's dates say is wrong with it now, if anything: one out of date is
 * served all the same (the operator may be about to renew it), but every client that checks
 * certificates refuses it, and without this line the log would not say why.
 */
function certificateWarning(cert: Buffer, file: string, now = Date.now()): string | undefined {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch {
    return undefined;
  }
  const notAfter = Date.parse(leaf.validTo);
  const notBefore = Date.parse(leaf.validFrom);
  if (notAfter < now)
    return `the TLS certificate in ${file} expired on ${new Date(notAfter).toISOString()}: clients that check certificates refuse it; renew it and reload`;
  if (notBefore > now)
    return `the TLS certificate in ${file} is not valid before ${new Date(notBefore).toISOString()}: clients that check certificates refuse it until then (is this machine's clock right?)`;
  return undefined;
}

async function loadBannedWords(config: Config, files: OptionFiles): Promise<BannedWords> {
  if (config.bannedWords === undefined) return new BannedWords(DEFAULT_BANNED_WORDS);
  const text = await files.read('banned-words', config.bannedWords);
  return BannedWords.fromText(text.toString('utf8'));
}

function chatSettings(config: Config, bannedWords: BannedWords): ChatSettings {
  return {
    maxUsers: config.maxUsers,
    bannedWords,
    hideAddresses: config.hideAddresses,
    motd: config.motd,
    maxMessage: config.maxMessage,
    rateLimit: config.rateLimit,
    rateBurst: config.rateBurst,
    maxConnections: config.maxConns,
    maxConnectionsPerIp: config.maxConnsPerIp,
    operators: config.operators.map(
      (o): Operator => ({
        name: o.name,
        verify: (password) => verifyPassword(password, o.password),
        // Of the stored hash, not the hash itself: the key is kept in Redis for resumes.
        key: createHash('sha256').update(`${o.name}\0${o.password}`).digest('base64url'),
      }),
    ),
    roomCapacity: config.roomCapacity,
    createRooms: config.createRooms,
    maxRoomsPerClient: config.maxRoomsPerClient,
    maxRooms: config.maxRooms,
    rooms: config.rooms,
    historyOnJoin: config.historyOnJoin,
  };
}

/**
 * A database made before its files were made private, or by hand, keeps its mode (an operator
 * may have chosen it): said once at start when other users can read the chats in it.
 */
function warnIfShared(file: string, log: Logger): void {
  let mode: number;
  try {
    mode = statSync(file).mode & 0o777;
  } catch {
    return;
  }
  if ((mode & 0o077) === 0) return;
  log.warn(
    { file, mode: mode.toString(8) },
    `${file} can be read by other users of this machine; chmod 600 it (SQLite gives its -wal and -shm files its mode)`,
  );
}

/**
 * Refuses a second server on the same --data-dir, whatever its --history: each rewrites
 * bans.json whole from its own list, so one would drop the other's bans.
 */
function lockDataDir(dir: string): DataDirLock {
  try {
    return DataDirLock.take(dir);
  } catch (err) {
    if (FileLock.isHeld(err)) {
      throw new StartError(
        `--data-dir ${dir}: another confab is using it (confab.lock is held): stop it, or give this one another --data-dir`,
      );
    }
    throw new StartError(`--data-dir ${dir}: cannot use it (${(err as Error).message})`);
  }
}

/** The history store --history names; SQLite's file lives in --data-dir. */
function openHistory(config: Config, dataDir: string): HistoryStore | undefined {
  const retention = {
    maxMessages: config.historyMaxMessages,
    maxAgeMs: config.historyMaxAge * 1000,
  };
  switch (config.history) {
    case 'off':
      return undefined;
    case 'memory':
      return new MemoryHistoryStore({
        retention,
        maxBytes: config.historyMemoryMax,
        maxRooms: config.historyMaxRooms,
      });
    default:
      try {
        // The directory is there: lockDataDir made it.
        return new SqliteHistoryStore(path.join(dataDir, 'history.db'), {
          retention,
          afterCommit: flushWrites,
          maxRooms: config.historyMaxRooms,
          maxBytes: config.historySqliteMax,
        });
      } catch (err) {
        const { code, message } = err as { code?: string; message: string };
        // The lock file is held: by another process's store, not a stale lock.
        if (code === 'SQLITE_BUSY') {
          throw new StartError(
            `--data-dir ${config.dataDir}: another confab is using its history (history.db-lock is held): stop it, or give this one another --data-dir`,
          );
        }
        throw new StartError(`--data-dir: cannot open the history database: ${message}`);
      }
  }
}

/** Cluster-wide numbers are read from Redis at most this often, however many ask. */
const CENSUS_CACHE_MS = 1_000;
/** How long after a chat failed to be stored /healthz still says so. */
const STORE_FAILURE_SHOWN_MS = 60_000;
/** A /healthz or scrape does not wait longer than this for them. */
const CENSUS_TIMEOUT_MS = 1_000;

/**
 * The longest a starting node waits, on a Redis emptied moments ago, for running nodes to
 * record their shard list (see ClusterNode.open).
 */
const STATE_WAIT_MAX_MS = 10_000;
/** How long start-up waits for Redis before giving up with a StartError. */
const REDIS_START_TIMEOUT_MS = 5_000;
/** How long a start that gave up waits for its Redis connections to close in order. */
const GIVE_UP_MS = 1_000;
/** Heartbeats this often, and at least five times per --cluster-timeout. */
const HEARTBEAT_MS = 1_000;
const heartbeatMs = (timeoutMs: number) => Math.min(HEARTBEAT_MS, Math.floor(timeoutMs / 5));

/**
 * A starting node's heartbeats, one at a time, every interval until `stop`: against a slow
 * Redis, start-up takes more round trips than --cluster-timeout holds, and a node silent
 * meanwhile was reaped by the others before it opened, then told its first client it had
 * been cut off.
 */
class StartBeats {
  private under: SentHeartbeat | undefined;
  private readonly timer: ReturnType<typeof setInterval>;

  constructor(private readonly presence: RedisPresence) {
    this.timer = setInterval(() => {
      this.beat().catch(() => {});
    }, heartbeatMs(presence.timeoutMs));
    this.timer.unref();
  }

  /** A heartbeat now, or the one under way. */
  beat(): Promise<unknown> {
    if (this.under === undefined) {
      const beat = this.presence.heartbeat();
      const under = { beat, sent: performance.now() };
      this.under = under;
      void beat.then(
        () => this.ended(under),
        () => this.ended(under),
      );
    }
    return this.under.beat;
  }

  /** No more; the one under way, if any, for the keeper's first round. */
  stop(): SentHeartbeat | undefined {
    clearInterval(this.timer);
    return this.under;
  }

  private ended(under: SentHeartbeat): void {
    if (this.under === under) this.under = undefined;
  }
}

/**
 * Heartbeats a resync waits for before it reads a room's members again (Cluster.resyncDelayMs):
 * after a Redis restart each live node registers its members again at its next one.
 */
const RESYNC_HEARTBEATS = 3;

/** How often a node reads the cluster's ban list again, in case it missed a change. */
const BAN_REFRESH_MS = 5_000;
/**
 * How long a stopping node waits for Redis, for its members' leaves and then for leaving the
 * cluster: a Redis that stalls (its connections up, nothing answered) must not keep the
 * process from exiting. Whatever is not done by then the others do when they reap the node.
 */
const LEAVE_MS = 2_000;
/**
 * How long a graceful stop lets the requests under way finish (Chat.quiesce): a chat being
 * stored is a commit away, or a Redis round trip; a Redis that stalls is not waited for.
 * At most half of --shutdown-timeout, which the listeners' close counts from before it: the
 * rest is for the clients' queued messages and the "90" that tells them.
 */
const QUIESCE_MS = 250;
/** A Redis URL as logs and errors show it: without its password. */
function shownUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password === '') return url;
    parsed.password = '***';
    return parsed.toString();
  } catch {
    // ioredis reads `host` or `host:port` without a scheme; only credentials are hidden.
    return url.includes('@') ? '(an unparsable --redis URL)' : url;
  }
}

/**
 * A node's connection to the cluster: one client for commands per Redis instance (the
 * --redis one shared with presence), each instance's broker with its own subscriber.
 */
class ClusterNode implements Cluster, ClusterView {
  readonly resyncDelayMs: number;
  readonly originOf = senderOrigin;
  private keeper: PresenceKeeper | undefined;
  private banTimer: ReturnType<typeof setInterval> | undefined;
  private counted: { until: number; result: Promise<Census | undefined> } | undefined;
  private refuse: (reason: string) => void = () => {};
  /** Settles, with the reason, when a heartbeat finds this node may not run any more. */
  readonly refused = new Promise<string>((resolve) => {
    this.refuse = resolve;
  });

  private constructor(
    /** The --redis client first, then one per --redis-shards URL. */
    private readonly clients: readonly Redis[],
    readonly history: HistoryStore,
    readonly presence: RedisPresence,
    readonly broker: Broker,
    /** The cluster's wall clock: every node's reading of Redis's time. */
    readonly clock: RedisClock,
    /** Until `keep`: the heartbeats of the start. */
    private readonly starting: StartBeats,
  ) {
    presence.onUnregistered = async () => {
      await this.keeper?.tick();
    };
    this.resyncDelayMs = RESYNC_HEARTBEATS * heartbeatMs(presence.timeoutMs);
  }

  /**
   * Connects, registers this node and subscribes its whisper address, or
   * throws a StartError within a few seconds (ioredis would retry forever).
   */
  static async open(
    config: Config,
    url: string,
    log: Logger,
    stop?: AbortSignal,
  ): Promise<ClusterNode> {
    const urls = [url, ...shardUrls(config.redisShards)];
    // The option each instance came from, as logs and errors name it.
    const optionOf = (i: number) => (i === 0 ? '--redis' : '--redis-shards');
    /** Each instance's last error, and whether it has answered at start. */
    const errors: (Error | undefined)[] = urls.map(() => undefined);
    const answered = urls.map(() => false);
    const reported = urls.map(() => false);
    // Until the node is open, a failure is told by the StartError alone, in one line: a log
    // record of it as well would print the error's stack before that line.
    let opened = false;
    const onErrorOf = (i: number) => (error: Error) => {
      errors[i] = error;
      // A Redis that is down fails every reconnect: said once per outage.
      if (!opened || reported[i]) return;
      reported[i] = true;
      log.warn({ err: error }, `Redis (${optionOf(i)} ${shownUrl(urls[i]!)}): ${error.message}`);
    };
    const clients: Redis[] = [];
    for (const [i, each] of urls.entries()) {
      let redis: Redis;
      try {
        // Shared by the instance's store and broker (and, for --redis, the presence).
        redis = commandClient(each, UNPIPELINED_SCRIPTS);
      } catch (err) {
        for (const c of clients) c.disconnect();
        throw new StartError(`${optionOf(i)} ${shownUrl(each)}: ${(err as Error).message}`);
      }
      redis.on('error', onErrorOf(i));
      redis.on('ready', () => {
        if (reported[i])
          log.info({}, `Redis (${optionOf(i)} ${shownUrl(each)}) is reachable again`);
        reported[i] = false;
      });
      clients.push(redis);
    }
    const redis = clients[0]!;
    const onError = onErrorOf(0);
    // One id for all: Presence says which node a member is on, the broker delivers there.
    const node = `n${randomUUID()}`;
    // Read before anything is timed by it: what nodes compare, they time in Redis's time.
    const clock = new RedisClock(redis, Date.now, (skew, doubt) => {
      if (doubt > 0) {
        log.warn(
          { roundTripMs: Math.round(2 * doubt) },
          `Redis answered TIME slowly: the node's reading of Redis's clock may be up to ${Math.ceil(doubt / 1000)} s off until a faster answer`,
        );
      }
      if (Math.abs(skew) <= CLOCK_TOLERANCE_MS) return;
      log.warn(
        { skewMs: skew },
        `this machine's clock is ${Math.round(Math.abs(skew) / 1000)} s ${skew > 0 ? 'behind' : 'ahead of'} Redis's: the node times chats, bans and history's age by Redis's clock`,
      );
    });
    const stores = clients.map(
      (client, i) =>
        new RedisHistoryStore({
          redis: client,
          publish: true,
          retention: {
            maxMessages: config.historyMaxMessages,
            maxAgeMs: config.historyMaxAge * 1000,
          },
          maxRooms: config.historyMaxRooms,
          now: clock.now,
          timeKnown: () => clock.judged,
          onError: onErrorOf(i),
        }),
    );
    const presence = new RedisPresence({
      redis,
      node,
      timeoutMs: config.clusterTimeout * 1000,
      timeKnown: () => clock.judged,
      onError,
    });
    const fail = (err: unknown) => {
      // The first instance that failed and has not answered, else the first not answered.
      let i = urls.findIndex((_, j) => !answered[j] && errors[j] !== undefined);
      if (i < 0) i = answered.indexOf(false);
      if (i < 0)
        i = Math.max(
          0,
          errors.findIndex((e) => e !== undefined),
        );
      // Every instance answered, then a step was not done in time: stalled, or too far away
      // (a step takes a few round trips), not out of reach. Which one a step of several
      // waited on is not known, so none is named but the only one.
      if (!answered.includes(false) && err instanceof TimeoutError) {
        const which =
          urls.length === 1
            ? `Redis at ${shownUrl(urls[0]!)} (${optionOf(0)})`
            : 'Redis (--redis, --redis-shards)';
        return new StartError(
          `${which} answered, then took more than ${REDIS_START_TIMEOUT_MS / 1000} s over a step of start-up (stalled, or a round trip of about 2 s or more): ${err.message}`,
        );
      }
      const where = `Redis at ${shownUrl(urls[i]!)} (${optionOf(i)})`;
      return new StartError(`cannot reach ${where}: ${(errors[i] ?? (err as Error)).message}`);
    };
    let beats: StartBeats | undefined;
    const giveUp = async () => {
      // Not waited for long: what is under way (a start heartbeat, a store's last write) may
      // wait on the very Redis that failed the start, stalled rather than gone.
      void beats?.stop();
      const closed = Promise.all([
        ...stores.map((store) => store.close().catch(() => {})),
        presence.close().catch(() => {}),
      ]);
      await withTimeout(closed, GIVE_UP_MS).catch(() => {});
      for (const c of clients) c.disconnect();
    };
    // A step of start-up that must finish in time; if it does not, everything opened so far
    // is closed and the error names the instance to blame.
    const atStart = async <T>(work: Promise<T>): Promise<T> => {
      try {
        return await withTimeout(work, REDIS_START_TIMEOUT_MS);
      } catch (err) {
        await giveUp();
        throw fail(err);
      }
    };
    const answer = (i: number, work: Promise<unknown>) =>
      work.then(
        () => {
          answered[i] = true;
        },
        (error: unknown) => {
          errors[i] ??= error as Error;
          throw error;
        },
      );
    // The first heartbeat registers the node, and every instance answers a PING. Until they
    // are answered nothing else is opened: a subscriber connection waiting for a Redis that
    // is not there could not be closed.
    await atStart(
      Promise.all([
        answer(0, presence.heartbeat()),
        ...clients.slice(1).map((c, i) => answer(i + 1, c.ping())),
      ]),
    );
    beats = new StartBeats(presence);
    const starting = beats;
    // A reading across a step of this machine's clock says nothing of when TIME ran: a few
    // more tries, then the clock's own retries. (One slower than the start's limit fails it.)
    for (let tries = 0; tries < 3; tries++) {
      if (await atStart(clock.sync())) break;
    }
    if (!clock.judged) {
      log.warn(
        {},
        "could not tell Redis's time (this machine's clock stepped during each reading): the node times by this machine's clock, and prunes no history by age nor removes ended bans, until it can",
      );
    }
    const twice = clients.length > 1 ? await atStart(sameServer(clients)) : undefined;
    if (twice !== undefined) {
      await giveUp();
      const [i, j] = twice;
      throw new StartError(
        `${optionOf(j)} ${shownUrl(urls[j]!)} is the Redis server of ${optionOf(i)} ${shownUrl(urls[i]!)} again: each instance is listed once (its databases share one pub/sub)`,
      );
    }
    const ours = shardListHash(urls.slice(1));
    // This node's first heartbeat, in Redis's time: a node last heard before it may be one
    // whose silence that heartbeat took for a stall of Redis (the whole cluster killed).
    const first = await atStart(redis.zscore(presence.nodesKey, node));
    const where = {
      // The hash of the nodes' --redis-shards list (see agreeOnShards).
      key: presence.keyOf('shards'),
      nodes: presence.nodesKey,
      timeouts: presence.keyOf('timeouts'),
      waiting: presence.keyOf('shards-waiting'),
      node,
      timeoutMs: presence.timeoutMs,
      since: first === null ? undefined : Number(first),
    };
    // One heartbeat of this node's after `ms` (at most a heartbeat's interval) of waiting for
    // the agreement; SIGINT or SIGTERM ends the wait, and the start.
    const beatAfter = async (ms: number) => {
      // Ends early, rejecting, when `stop` is aborted: checked just below.
      await sleep(Math.min(heartbeatMs(presence.timeoutMs), ms), undefined, {
        signal: stop,
      }).catch(() => {});
      if (stop?.aborted) {
        await giveUp();
        throw new StartError('stopped while waiting for the shard list agreement');
      }
      await atStart(starting.beat());
    };
    // After Redis restarted empty, the running nodes record their list again at their next
    // heartbeats (RedisPresence.shardList): a node that found none recorded and recorded its
    // own first would have them refused. So while the state Redis holds is younger than the
    // time they take to be back, an empty record is waited out: their timeout (a node away
    // longer has cut itself off), this node's standing in for theirs, REFILL_MS at least and
    // STATE_WAIT_MAX_MS at most.
    const wait = Math.min(Math.max(presence.timeoutMs, REFILL_MS), STATE_WAIT_MAX_MS);
    const keys = { list: where.key, clock: presence.keyOf('clock') };
    for (let pass = 0; ; pass++) {
      const left = await atStart(freshState(redis, keys, wait));
      if (left === 0) break;
      if (pass === 0) {
        log.info(
          {},
          `no --redis-shards list recorded, and Redis was empty moments ago: waiting up to ${Math.ceil(left / 1000)} s for running nodes to record theirs`,
        );
      }
      await beatAfter(left);
    }
    let theirs = await atStart(agreeOnShards(redis, where, ours));
    // Bounded by those nodes' timeouts, which the answer counts down. Each pass is one
    // heartbeat of this node's: a longer pause would be a silence of every node, which a
    // heartbeat forgives by moving the dead nodes' last beats later again. The nodes of a
    // running cluster beat within that too, so the first pass is not worth a warning.
    for (let pass = 0; typeof theirs === 'object'; pass++) {
      if (pass === 1) {
        log.warn(
          {},
          `the shard list differs from the one stored, and the nodes using it were last heard before this node started: waiting up to ${Math.ceil(theirs.waitMs / 1000)} s for them to be heard from again or time out`,
        );
      }
      await beatAfter(theirs.waitMs);
      theirs = await atStart(agreeOnShards(redis, where, ours));
    }
    if (theirs !== undefined) {
      await giveUp();
      throw new StartError(
        `--redis-shards differs from the list the running nodes of this cluster were given (${theirs}, this node ${ours}): every node needs the same list in the same order, and the same version's placement of rooms (nodes of versions that placed the lobby on a shard must all stop first)`,
      );
    }
    presence.shardList = ours;
    const brokers = clients.map(
      (client, i) =>
        new RedisBroker({ redis: client, history: stores[i]!, node, onError: onErrorOf(i) }),
    );
    // One instance: its store and broker as they are, with nothing in between.
    const one = stores.length === 1;
    const history: HistoryStore = one ? stores[0]! : new ShardedHistoryStore(stores);
    const broker: Broker = one ? brokers[0]! : new ShardedBroker(brokers);
    const cluster = new ClusterNode(clients, history, presence, broker, clock, starting);
    try {
      await withTimeout(broker.start(), REDIS_START_TIMEOUT_MS);
    } catch (err) {
      await withTimeout(cluster.close(), 1_000).catch(() => {});
      throw fail(err);
    }
    opened = true;
    return cluster;
  }

  /** Every instance: a room on one that is down can neither store nor relay chats. */
  get reachable(): boolean {
    return this.clients.every((c) => c.status === 'ready');
  }

  /**
   * Members and live nodes across the cluster, or undefined while Redis does
   * not answer. Probes and scrapes share one read a second: whoever polls
   * /healthz or /metrics, Redis sees at most one command a second from it.
   */
  census(): Promise<Census | undefined> {
    const now = Date.now();
    if (this.counted === undefined || now >= this.counted.until) {
      const result = this.reachable
        ? withTimeout(this.presence.census(), CENSUS_TIMEOUT_MS).catch(() => undefined)
        : Promise.resolve(undefined);
      this.counted = { until: now + CENSUS_CACHE_MS, result };
    }
    return this.counted.result;
  }

  stale(): boolean {
    return this.keeper?.stale() ?? false;
  }

  /**
   * Heartbeats from now on; the chat hears of dead nodes and of this one being cut off.
   * Settles after the first round (or a start-up's wait for Redis): a node reaped while it
   * started learns so with no client to close.
   */
  async keep(chat: Chat, timeoutMs: number, log: Logger): Promise<void> {
    const under = this.starting.stop();
    this.keeper = new PresenceKeeper(
      this.presence,
      {
        onReaped: (dead) => chat.reaped(dead),
        onExpired: () => chat.expired(),
        onLost: (members, crowded) => chat.lost(members, crowded),
        onReset: () => chat.registeredAgain(),
        onGone: (members) => chat.goneAway(members),
        onDisplaced: (members) => chat.displaced(members),
        onError: (err) => log.debug({ err }, 'heartbeat failed'),
        onRefused: (reason) => this.refuse(reason),
      },
      { intervalMs: heartbeatMs(timeoutMs), capacityOf: (room) => chat.capacityOf(room) },
    );
    const first = this.keeper.start(under);
    this.clock.start(CLOCK_SYNC_MS, (err) => log.debug({ err }, "could not read Redis's time"));
    // Notices of ban changes travel at most once: a node that missed one catches up here.
    this.banTimer = setInterval(() => {
      chat.refreshBans().catch((err: unknown) => log.debug({ err }, 'could not read the bans'));
    }, BAN_REFRESH_MS);
    this.banTimer.unref();
    await withTimeout(first, REDIS_START_TIMEOUT_MS).catch(() => {});
  }

  /**
   * Leaves the cluster: deregisters (members already released), unsubscribes, disconnects;
   * waits for Redis until `until` (Date.now() ms) at most.
   */
  async close(until = Date.now() + LEAVE_MS): Promise<void> {
    this.starting.stop();
    this.keeper?.stop();
    this.clock.stop();
    if (this.banTimer !== undefined) clearInterval(this.banTimer);
    // One budget for every step: each waits on Redis, which may be stalled rather than gone
    // (a 'ready' connection that answers nothing), and is then disconnected below.
    const left = () => Math.max(0, until - Date.now());
    await withTimeout(this.presence.close(), left()).catch(() => {});
    await withTimeout(this.broker.close(left()), left()).catch(() => {});
    // Its last appends may be waiting for an instance that is down: the client is then
    // disconnected below, which fails them, rather than waited on for its reconnects.
    await withTimeout(this.history.close(), left()).catch(() => {});
    await Promise.all(
      this.clients.map(async (redis) => {
        if (redis.status === 'ready') {
          try {
            await withTimeout(redis.quit(), left());
            return;
          } catch {
            // Fall through: nothing is waiting for a reply any more.
          }
        }
        redis.disconnect();
      }),
    );
  }
}

function streamLimits(config: Config): StreamLimits {
  return {
    maxFrame: config.maxFrame,
    maxQueue: config.maxQueue,
    maxQueueTotal: config.maxQueueTotal,
    maxPartialTotal: config.maxPartialTotal,
    closeTimeoutMs: config.shutdownTimeout * 1000,
    keepAliveMs: config.keepalive * 1000,
    handshakeTimeoutMs: config.handshakeTimeout * 1000,
    stallTimeoutMs: config.stallTimeout * 1000,
  };
}

/** A comma-separated option (--allowed-origins, --allowed-hosts) as its entries. */
function listOf(option: string): string[] {
  return option
    .split(',')
    .map((o) => o.trim())
    .filter((o) => o !== '');
}

/** Turns a bind failure into one line that names the option to change. */
function bindError(err: unknown, host: string, port: number, option: string): StartError {
  const { code, message } = err as NodeJS.ErrnoException;
  const change = `change it with --${option} or ${envName(option)}`;
  switch (code) {
    case 'EADDRINUSE':
      return new StartError(`port ${port} is in use (${change})`);
    case 'EACCES':
      return new StartError(`no permission to listen on port ${port} (${change})`);
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new StartError(
        `cannot listen on ${host}: not an address of this machine (change it with --host or CONFAB_HOST)`,
      );
    default:
      return new StartError(`cannot listen on ${host} port ${port} (--${option}): ${message}`);
  }
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
    private config: Config,
    /** Shared with every listener, which read them when they use them. */
    private readonly limits: StreamLimits,
    private readonly allowedOrigins: string[],
    private readonly allowedHosts: string[],
    private readonly tlsListener: StreamListener | undefined,
    private readonly history: HistoryStore | undefined,
    private readonly cluster: ClusterNode | undefined,
    private readonly files: OptionFiles,
    /** Held while this server runs alone on its --data-dir (not in a cluster). */
    private readonly dirLock: DataDirLock | undefined,
    /** How the last reload went (/metrics). */
    private readonly reloads: ReloadOutcome,
  ) {}

  /**
   * Reads every file and checks the TLS material before binding anything,
   * then binds the listeners in order. If any step fails, whatever is already
   * open is closed and a StartError says what to change.
   */
  static async start(config: Config, log: Logger, stop?: AbortSignal): Promise<ConfabServer> {
    const files = new OptionFiles();
    const bannedWords = await loadBannedWords(config, files);
    const tls = await loadTls(config, files);
    const outOfDate = tls && certificateWarning(tls.cert, config.tlsCert!);
    if (outOfDate) log.warn({}, outOfDate);
    files.started();
    // A cluster keeps its bans and history in Redis; one server alone keeps them here.
    const dirLock = config.redis === undefined ? lockDataDir(config.dataDir) : undefined;
    const dataDir = dirLock?.dir ?? config.dataDir;
    const banStore = new FileBanStore(dataDir);
    let bans: ReturnType<FileBanStore['load']>;
    let cluster: ClusterNode | undefined;
    let history: HistoryStore | undefined;
    let chat: Chat;
    // Whatever fails from here on lets the data dir go, and closes the history it opened.
    try {
      try {
        bans = banStore.load();
      } catch (err) {
        throw new StartError(`--data-dir: ${(err as Error).message}`);
      }
      cluster =
        config.redis === undefined
          ? undefined
          : await ClusterNode.open(config, config.redis, log, stop);
      history = cluster?.history ?? openHistory(config, dataDir);
      if (history instanceof SqliteHistoryStore)
        warnIfShared(path.join(dataDir, 'history.db'), log);
      if (history instanceof SqliteHistoryStore && history.replaced) {
        log.warn(
          {},
          'history.db is older than the one this --data-dir last ran on (restored from a backup?): every room starts a new history epoch, so clients that saw later messages are told their gap was not recovered',
        );
      }
      const node = cluster;
      chat = new Chat({
        ...chatSettings(config, bannedWords),
        banStore: {
          load: () => bans,
          save: (b) => {
            dirLock?.ensure();
            banStore.save(b);
          },
        },
        logger: log,
        history,
        cluster: node,
        ...(node === undefined
          ? {}
          : { clock: node.clock.now, timeKnown: () => node.clock.judged }),
      });
    } catch (err) {
      if (cluster === undefined) await history?.close();
      dirLock?.giveUp();
      throw err;
    }
    if (cluster !== undefined) {
      if (bans.length > 0) {
        log.warn(
          { bans: bans.length },
          'bans.json in --data-dir is not used with --redis: the cluster keeps its bans in Redis',
        );
      }
      try {
        await withTimeout(chat.refreshBans(), REDIS_START_TIMEOUT_MS);
      } catch (err) {
        await withTimeout(cluster.close(), 1_000).catch(() => {});
        throw new StartError(`cannot read the ban list from Redis: ${(err as Error).message}`);
      }
      await cluster.keep(chat, config.clusterTimeout * 1000, log);
      log.info({ node: cluster.presence.node }, `joined the cluster at ${shownUrl(config.redis!)}`);
    }
    const limits = streamLimits(config);
    // One cap on what clients of every listener have queued together.
    const backlogs = new Backlogs(limits, log);
    const partials = new PartialFrames(limits, log);
    const allowedOrigins = listOf(config.allowedOrigins);
    const allowedHosts = listOf(config.allowedHosts);
    const listeners: Listener[] = [];
    const stats: TransportStats[] = [];
    const reloads = new ReloadOutcome();
    // A client may have slipped in before a later listener failed: end it too,
    // or closing its listener would wait for it.
    const abandon = async () => {
      try {
        chat.shutdown();
        await Promise.all(listeners.map((l) => l.close()));
        // As in stop: a release waiting for a Redis that does not answer holds no start's exit.
        if (cluster !== undefined) await withTimeout(chat.settled(), LEAVE_MS).catch(() => {});
        else await chat.settled();
        if (cluster !== undefined) await cluster.close();
        else await history?.close();
      } finally {
        dirLock?.giveUp();
      }
    };
    /** Builds and binds one listener; on any failure closes those already open. */
    const start = async (
      create: () => Listener & { stats: TransportStats },
      option: string,
      port: number,
      transport: string,
      describe: (a: PeerAddress) => string,
      fields: object = {},
    ) => {
      let bound: PeerAddress;
      let listener: Listener & { stats: TransportStats };
      try {
        listener = create();
      } catch (err) {
        await abandon();
        throw new StartError(`cannot start the ${transport} listener: ${(err as Error).message}`);
      }
      try {
        bound = await listener.listen();
      } catch (err) {
        await abandon();
        throw bindError(err, config.host, port, option);
      }
      listeners.push(listener);
      stats.push(listener.stats);
      announced.push(() =>
        log.info({ transport, address: bound.ip, port: bound.port, ...fields }, describe(bound)),
      );
      return bound;
    };
    // Said once every listener is up: a later one that cannot bind ends the start, and a log
    // collector must not read "listening" for a server that never served.
    const announced: (() => void)[] = [];

    const address = await start(
      () =>
        new StreamListener(
          chat,
          { host: config.host, port: config.port, limits, backlogs, partials },
          log,
        ),
      'port',
      config.port,
      'tcp',
      (a) => `The server socket is listening on ('${a.ip}', ${a.port})`,
      { maxUsers: config.maxUsers },
    );
    const tlsPort = config.tlsPort;
    let tlsListener: StreamListener | undefined;
    const tlsAddress =
      tls === undefined || tlsPort === undefined
        ? undefined
        : await start(
            () => {
              tlsListener = new StreamListener(
                chat,
                { host: config.host, port: tlsPort, limits, backlogs, partials, tls },
                log,
              );
              return tlsListener;
            },
            'tls-port',
            tlsPort,
            'tls',
            (a) => `TLS listening on ('${a.ip}', ${a.port})`,
          );
    const httpAddress =
      config.httpPort < 0
        ? undefined
        : await start(
            () =>
              new HttpListener(
                chat,
                {
                  host: config.host,
                  port: config.httpPort,
                  limits,
                  backlogs,
                  partials,
                  webRoot: WEB_ROOT,
                  // The listener reads these arrays per request, so a reload edits them in place.
                  allowedOrigins,
                  allowedHosts,
                  // Reads `stats` when scraped, by which time every listener is in it.
                  metrics: createMetrics(chat, stats, cluster, backlogs, reloads),
                  health: async () => {
                    const local = { users: chat.lobby.size, connections: chat.connectionCount };
                    // Chats that cannot be stored close their senders (3005): a full disk is
                    // an outage for everyone who chats, whatever else still answers.
                    const storing = chat.storeFailedWithin(STORE_FAILURE_SHOWN_MS)
                      ? { status: 'degraded', history: 'failing' }
                      : {};
                    if (cluster === undefined) return { ...storing, ...local };
                    // This node's numbers stay: they are what its own operator needs.
                    const counts = await cluster.census();
                    const reachable = cluster.reachable && counts !== undefined;
                    return {
                      ...storing,
                      ...(reachable ? {} : { status: 'degraded' }),
                      ...local,
                      redis: reachable ? 'reachable' : 'unreachable',
                      ...(counts === undefined ? {} : { cluster: counts }),
                    };
                  },
                },
                log,
              ),
            'http-port',
            config.httpPort,
            'http',
            (a) => `Web app on http://${a.ip.includes(':') ? `[${a.ip}]` : a.ip}:${a.port}/`,
          );
    for (const announce of announced) announce();
    dirLock?.watch((change) => {
      const lockFile = path.join(dataDir, 'confab.lock');
      if (change.kind === 'taken again') {
        const still = change.shared
          ? ', but bans changed here are still not saved until this server restarts: another server held the data dir meanwhile'
          : '';
        log.warn(
          { dataDir },
          `${lockFile} was removed or replaced while this server ran: locked again${still}`,
        );
      } else if (change.kind === 'shared') {
        log.error(
          { dataDir },
          `${lockFile} was removed or replaced while this server ran, and another server holds it now: two servers are running on one data dir; bans changed here are not saved until this server restarts`,
        );
      } else {
        log.error(
          { dataDir, err: change.error },
          `${lockFile} was removed or replaced while this server ran, and cannot be locked again: bans changed here are not saved while it cannot`,
        );
      }
    });
    return new ConfabServer(
      chat,
      listeners,
      address,
      tlsAddress,
      httpAddress,
      config,
      limits,
      allowedOrigins,
      allowedHosts,
      tlsListener,
      history,
      cluster,
      files,
      dirLock,
      reloads,
    );
  }

  /**
   * A reload that failed, here or before it reached the server (a config file that does not
   * parse), for /metrics: the caller, which reads the file, says so.
   */
  reloadFailed(): void {
    this.reloads.failed();
  }

  /**
   * Applies a new configuration without dropping anyone: the chat rules,
   * --max-queue and --shutdown-timeout apply from the next request on, a
   * TLS certificate to new TLS connections; options that need a restart are
   * reported and keep their old values. The banned-words and TLS files are
   * read again even if their paths are the same (a renewed certificate).
   * Throws, changing nothing, if a file cannot be read or the certificate
   * does not fit its key. --log-level is the caller's, which owns the logger.
   */
  async reload(next: Config): Promise<ReloadResult> {
    this.files.begin();
    const bannedWords = await loadBannedWords(next, this.files);
    const old = this.config;
    const changed = OPTION_NAMES.filter(
      (name) => isFileKey(name) && old[configKey(name)] !== next[configKey(name)],
    );
    // The certificate can change only if a TLS listener is running at its old port.
    const tlsLive = this.tlsListener !== undefined && next.tlsPort === old.tlsPort;
    const live = (name: OptionName) =>
      isLive(name) && (tlsLive || (name !== 'tls-cert' && name !== 'tls-key'));
    const needRestart = changed.filter((name) => !live(name));
    const applied: ReloadResult['applied'] = changed.filter(live);
    if (JSON.stringify(old.operators) !== JSON.stringify(next.operators)) applied.push('operators');
    if (JSON.stringify(old.rooms) !== JSON.stringify(next.rooms)) applied.push('rooms');
    const tls = tlsLive ? await loadTls(next, this.files) : undefined;
    if (tls !== undefined) this.tlsListener?.setCertificate(tls);
    const outOfDate = tls && certificateWarning(tls.cert, next.tlsCert!);
    this.chat.reconfigure(chatSettings(next, bannedWords));
    this.limits.maxQueue = next.maxQueue;
    this.limits.maxQueueTotal = next.maxQueueTotal;
    this.limits.maxPartialTotal = next.maxPartialTotal;
    this.limits.closeTimeoutMs = next.shutdownTimeout * 1000;
    this.allowedOrigins.splice(0, this.allowedOrigins.length, ...listOf(next.allowedOrigins));
    this.allowedHosts.splice(0, this.allowedHosts.length, ...listOf(next.allowedHosts));
    // Restart-only options keep the values in force, so the next reload compares against those.
    const kept: Record<string, unknown> = { ...next };
    for (const name of needRestart) kept[configKey(name)] = old[configKey(name)];
    this.config = Object.freeze(kept) as unknown as Config;
    // Last: only a reload that got this far applied what it read.
    for (const option of this.files.settle()) if (!applied.includes(option)) applied.push(option);
    this.reloads.applied();
    return { applied, needRestart, warnings: outOfDate ? [outOfDate] : [] };
  }

  /**
   * Settles, with the reason, when the server must stop on its own: a cluster node whose
   * heartbeat was refused. Never settles otherwise.
   */
  get refused(): Promise<string> {
    return this.cluster?.refused ?? new Promise<string>(() => {});
  }

  /**
   * Graceful stop: stop accepting, tell every client, let queued messages
   * flush for up to --shutdown-timeout, then close whatever is left.
   */
  async stop(): Promise<void> {
    const closed = Promise.all(this.listeners.map((l) => l.close()));
    await this.chat.quiesce(Math.min(QUIESCE_MS, this.limits.closeTimeoutMs / 2));
    this.chat.shutdown();
    await closed;
    // The rooms live on in the cluster: they hear of these leaves before this node goes
    // (from the others reaping it, should Redis not answer in time).
    const settled = this.chat.settled();
    if (this.cluster !== undefined) {
      const until = Date.now() + LEAVE_MS;
      await withTimeout(settled, LEAVE_MS).catch(() => {});
      // Last: what was being stored as clients left is committed first.
      await this.cluster.close(until);
      return;
    }
    try {
      await settled;
      await this.history?.close();
    } finally {
      this.dirLock?.release();
    }
  }
}
