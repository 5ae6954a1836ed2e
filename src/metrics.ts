import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { Chat } from './core/chat.js';
import type { Census } from './core/presence.js';
import { CONFAB_VERSION } from './protocol/version.js';
import type { Backlogs } from './transports/backlogs.js';
import type { TransportStats } from './transports/stats.js';

/** What /metrics shows of a cluster (with --redis). */
export interface ClusterView {
  readonly reachable: boolean;
  /** Cluster-wide numbers, read from Redis at most once a second; undefined when it does not answer. */
  census(): Promise<Census | undefined>;
}

/**
 * How the last reload went, as Prometheus reports its own: a start counts as one that
 * succeeded. A log quieted below info does not say that a reload was applied; this does.
 */
export class ReloadOutcome {
  successful = true;
  /** Unix time, in seconds, of the start or the last reload applied. */
  successAt = Date.now() / 1000;
  applied(): void {
    this.successful = true;
    this.successAt = Date.now() / 1000;
  }
  failed(): void {
    this.successful = false;
  }
}

/**
 * Prometheus metrics. Every value is read from plain counters at scrape
 * time, so serving traffic never calls into prom-client. Returns the scrape.
 */
export function createMetrics(
  chat: Chat,
  transports: readonly TransportStats[],
  cluster?: ClusterView,
  backlogs?: Backlogs,
  reloads?: ReloadOutcome,
) {
  const registry = new Registry();
  // prom-client's names already start with process_ or nodejs_: confab_process_cpu_seconds_total,
  // confab_nodejs_heap_size_used_bytes, as dashboards made for other Node services expect them.
  collectDefaultMetrics({ register: registry, prefix: 'confab_' });
  const registers = [registry];
  // Which build answers, as Prometheus's own *_build_info gauges say it.
  new Gauge({
    name: 'confab_build_info',
    help: 'Always 1; its label names the confab version running',
    labelNames: ['version'],
    registers,
  }).set({ version: CONFAB_VERSION }, 1);
  const perTransport = (read: (t: TransportStats) => number) =>
    function (this: Gauge<'transport'> | Counter<'transport'>) {
      this.reset();
      for (const t of transports) {
        if (this instanceof Gauge) this.set({ transport: t.transport }, read(t));
        else this.inc({ transport: t.transport }, read(t));
      }
    };
  new Gauge({
    name: 'confab_connections',
    help: 'Open connections, by transport',
    labelNames: ['transport'],
    registers,
    collect: perTransport((t) => t.open),
  });
  new Counter({
    name: 'confab_connections_accepted_total',
    help: 'Connections accepted, by transport',
    labelNames: ['transport'],
    registers,
    collect: perTransport((t) => t.accepted),
  });
  new Counter({
    name: 'confab_messages_in_total',
    help: 'Requests received, by transport',
    labelNames: ['transport'],
    registers,
    collect: perTransport((t) => t.messagesIn),
  });
  new Counter({
    name: 'confab_messages_out_total',
    help: 'Messages sent to clients (one per recipient), by transport',
    labelNames: ['transport'],
    registers,
    collect: perTransport((t) => t.messagesOut),
  });
  new Gauge({
    name: 'confab_queue_high_water_bytes',
    help: 'Most bytes ever queued for one client, by transport',
    labelNames: ['transport'],
    registers,
    collect: perTransport((t) => t.queueHighWater),
  });
  if (backlogs !== undefined) {
    new Gauge({
      name: 'confab_queued_bytes',
      help: 'Bytes queued for clients now, on every listener (capped by --max-queue-total)',
      registers,
      collect() {
        this.set(backlogs.queued());
      },
    });
  }
  new Counter({
    name: 'confab_joins_total',
    help: 'Successful joins',
    registers,
    collect() {
      this.reset();
      this.inc(chat.stats.joins);
    },
  });
  new Counter({
    name: 'confab_leaves_total',
    help: 'Members who left the room, for any reason',
    registers,
    collect() {
      this.reset();
      this.inc(chat.stats.leaves);
    },
  });
  new Counter({
    name: 'confab_disconnects_total',
    help: 'Sessions ended, by reason',
    labelNames: ['reason'],
    registers,
    collect() {
      this.reset();
      for (const [reason, n] of chat.stats.ended) this.inc({ reason }, n);
    },
  });
  new Gauge({
    name: 'confab_room_members',
    help: 'Members in the room',
    labelNames: ['room'],
    registers,
    collect() {
      this.set({ room: chat.lobby.name }, chat.lobby.size);
    },
  });
  if (reloads !== undefined) {
    new Gauge({
      name: 'confab_config_last_reload_successful',
      help: '1 if the last reload (SIGHUP) was applied, 0 if it failed and the configuration before it runs',
      registers,
      collect() {
        this.set(reloads.successful ? 1 : 0);
      },
    });
    new Gauge({
      name: 'confab_config_last_reload_success_timestamp_seconds',
      help: 'When the configuration running was applied: the start or the last reload that succeeded',
      registers,
      collect() {
        this.set(reloads.successAt);
      },
    });
  }
  if (cluster !== undefined) {
    new Gauge({
      name: 'confab_redis_up',
      help: '1 if this node reaches every Redis instance (--redis, --redis-shards), else 0',
      registers,
      async collect() {
        this.set(cluster.reachable && (await cluster.census()) !== undefined ? 1 : 0);
      },
    });
    // 0 while Redis does not answer (confab_redis_up says so), rather than a stale count.
    new Gauge({
      name: 'confab_cluster_users',
      help: 'Members (nicknames held) on every node of the cluster',
      registers,
      async collect() {
        this.reset();
        const counts = await cluster.census();
        if (counts !== undefined) this.set(counts.users);
      },
    });
    new Gauge({
      name: 'confab_cluster_nodes',
      help: 'Nodes of the cluster that heartbeated within --cluster-timeout',
      registers,
      async collect() {
        this.reset();
        const counts = await cluster.census();
        if (counts !== undefined) this.set(counts.nodes);
      },
    });
  }
  return async () => ({ contentType: registry.contentType, body: await registry.metrics() });
}
