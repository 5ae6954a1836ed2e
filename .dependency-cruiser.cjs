// Layer rule: dependencies point inward.
//   protocol  <-  core  <-  transports / store / cluster  <-  server (composition root) / cli
// The client library depends on protocol only.
const io =
  '^(node:)?(net|tls|http|https|http2|dgram|fs|fs/promises|child_process|worker_threads|cluster)$';
// Packages resolve to their files under node_modules, so match the folder, not the name.
const drivers = 'node_modules/(ws|ioredis|redis|better-sqlite3|pino|pino-pretty|prom-client)/';

module.exports = {
  forbidden: [
    {
      name: 'protocol-is-pure',
      comment: 'protocol holds framing, message types and codecs: no I/O and no other layer',
      severity: 'error',
      from: { path: '^src/protocol/' },
      to: { pathNot: '^src/protocol/' },
    },
    {
      name: 'core-depends-on-protocol-only',
      comment: 'core holds rooms, sessions and rules: no sockets, Redis, SQLite or outer layers',
      severity: 'error',
      from: { path: '^src/core/' },
      to: { pathNot: '^src/(core|protocol)/' },
    },
    {
      name: 'core-no-io',
      severity: 'error',
      from: { path: '^src/(core|protocol)/' },
      to: { path: [io, drivers] },
    },
    {
      name: 'client-depends-on-protocol-only',
      severity: 'error',
      from: { path: '^src/client/' },
      to: { path: '^src/(core|transports|store|cluster|cli)/|^src/server' },
    },
    {
      name: 'web-app-depends-on-protocol-only',
      severity: 'error',
      from: { path: '^web/' },
      to: { path: '^src/(?!protocol/)' },
    },
    {
      name: 'store-depends-on-core-and-protocol',
      comment:
        'src/store implements core interfaces (HistoryStore) with drivers: no transports, cli, server or cluster',
      severity: 'error',
      from: { path: '^src/store/' },
      to: { path: '^src/', pathNot: '^src/(store|core|protocol)/' },
    },
    {
      name: 'transports-depend-on-core-and-protocol',
      comment:
        'src/transports carry sessions over sockets: no store, cluster, cli or server (the composition root wires them)',
      severity: 'error',
      from: { path: '^src/transports/' },
      to: { path: '^src/', pathNot: '^src/(transports|core|protocol)/' },
    },
    {
      name: 'cluster-depends-on-core-protocol-and-store',
      comment:
        'src/cluster implements core interfaces (Broker, Presence) over the Redis client in src/store: no transports, cli or server',
      severity: 'error',
      from: { path: '^src/cluster/' },
      to: { path: '^src/', pathNot: '^src/(cluster|store|core|protocol)/' },
    },
    {
      name: 'adapters-do-not-import-composition-root',
      severity: 'error',
      from: { path: '^src/(transports|store|cluster)/' },
      to: { path: '^src/(cli/|server)' },
    },
    {
      name: 'ioredis-through-store-ioredis',
      comment:
        'ioredis is loaded through src/store/ioredis.ts, which undoes what loading it does to String.prototype',
      severity: 'error',
      from: { pathNot: '^src/store/ioredis\\.ts$' },
      to: { path: 'node_modules/ioredis/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'no-circular',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default'],
    },
  },
};
