import net from 'node:net';
import type { ServerAddress } from '../client/index.js';
import { clip } from '../protocol/text.js';

/** More would be a mistake, not a cluster: each is dialed in turn on every reconnect. */
export const MAX_SERVERS = 64;

/**
 * `--host`'s value: one server or several (the nodes of a cluster), separated by commas,
 * each `host`, `host:port`, `[v6]` or `[v6]:port`; a bare IPv6 address takes no port.
 * Those without a port get `port`. A string says what is wrong.
 */
export function parseServers(list: string, port: number): ServerAddress[] | string {
  const entries = list.split(',').map((entry) => entry.trim());
  if (entries.length > MAX_SERVERS) return `at most ${MAX_SERVERS} servers`;
  const servers: ServerAddress[] = [];
  for (const entry of entries) {
    const server = parseServer(entry, port);
    if (typeof server === 'string') return server;
    servers.push(server);
  }
  return servers;
}

function parseServer(entry: string, port: number): ServerAddress | string {
  let host = entry;
  let portText: string | undefined;
  if (entry.startsWith('[')) {
    const close = entry.indexOf(']');
    if (close < 0) return `"${clip(entry)}" has no closing ]`;
    host = entry.slice(1, close);
    const rest = entry.slice(close + 1);
    if (net.isIPv6(host) === false) return `"${clip(host)}" is not an IPv6 address`;
    if (rest !== '') {
      if (!rest.startsWith(':')) return `"${clip(entry)}" is not host:port`;
      portText = rest.slice(1);
    }
  } else {
    const colon = entry.indexOf(':');
    // Two colons or more: an IPv6 address without a port.
    if (colon >= 0 && entry.indexOf(':', colon + 1) < 0) {
      host = entry.slice(0, colon);
      portText = entry.slice(colon + 1);
    } else if (colon >= 0 && !net.isIPv6(entry)) {
      return `"${clip(entry)}" is not an IPv6 address (a host with a port is host:port)`;
    }
  }
  if (host === '') return `"${clip(entry)}" names no host`;
  if (/[\s/\\@?#\p{Cc}]/u.test(host)) return `"${clip(host)}" is not a host name or address`;
  let p = port;
  if (portText !== undefined) {
    p = /^\d{1,5}$/.test(portText) ? Number(portText) : 0;
    if (p < 1 || p > 65535) {
      return `the port in "${clip(entry)}" must be a number from 1 to 65535`;
    }
  }
  return { host, port: p };
}

/** How a list of servers is shown: as `--host` takes it. */
export function showServers(servers: readonly ServerAddress[]): string {
  return servers
    .map(({ host, port }) => (net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`))
    .join(', ');
}
