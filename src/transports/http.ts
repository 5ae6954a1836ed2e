import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { WebSocketServer } from 'ws';
import type { Chat } from '../core/chat.js';
import type { Logger, PeerAddress } from '../core/ports.js';
import { clip } from '../protocol/text.js';
import { CONFAB_VERSION } from '../protocol/version.js';
import { Backlogs } from './backlogs.js';
import { Deadline, killAfter, listenOn, RawSockets } from './lifecycle.js';
import { PartialFrames } from './partial-frames.js';
import { TransportStats } from './stats.js';
import type { StreamLimits } from './stream.js';
import { maxFragments, WsConnection } from './websocket.js';

export interface HttpOptions {
  host: string;
  port: number;
  limits: StreamLimits;
  /** What clients queue together, shared by a server's listeners (one of its own by default). */
  backlogs?: Backlogs;
  /** What clients hold of unfinished requests together, shared the same way. */
  partials?: PartialFrames;
  /** The built web app; served from memory, so nothing outside it can be reached. */
  webRoot: string;
  /** Origins allowed to open /ws besides the page's own; "*" allows any. */
  allowedOrigins: readonly string[];
  /** Host names answered besides IP addresses and localhost (hostAllowed); "*" allows any. */
  allowedHosts: readonly string[];
  metrics: () => Promise<{ contentType: string; body: string }>;
  /** /healthz's fields besides "status"; may ask a cluster, which it bounds itself. */
  health: () => object | Promise<object>;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.webmanifest': 'application/manifest+json',
};

const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

interface StaticFile {
  type: string;
  body: Buffer;
  immutable: boolean;
}

function loadStatic(root: string): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  if (!existsSync(root)) return files;
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = path.join(dir, name);
      if (statSync(full).isDirectory()) {
        walk(full);
        continue;
      }
      const url = `/${path.relative(root, full).split(path.sep).join('/')}`;
      files.set(url, {
        type: TYPES[path.extname(name)] ?? 'application/octet-stream',
        body: readFileSync(full),
        immutable: url.startsWith('/assets/'),
      });
    }
  };
  walk(root);
  return files;
}

/** What no Host header of a name and a port holds (RFC 9110): user info, a path, a query. */
const NOT_IN_HOST = /[@/\\?#\s]/;

/** A Host header's name ('' for none): a name and a port, no more. */
function hostName(host: string): string {
  // Read as a URL, "evil.example@127.0.0.1" named 127.0.0.1.
  if (NOT_IN_HOST.test(host)) return '';
  try {
    return new URL(`http://${host}`).hostname;
  } catch {
    return '';
  }
}

/**
 * Requests one socket may have waiting for their responses. Browsers never
 * pipeline; a client that writes thousands of requests without reading
 * would otherwise get a handler (and a buffered response) for each at once.
 */
const MAX_IN_FLIGHT = 16;

/** A /metrics scrape is reused for this long: collecting it is the costly part. */
const SCRAPE_CACHE_MS = 1000;

/** The path of a request target, or undefined if it cannot be parsed (e.g. "//"). */
function pathOf(target: string | undefined): string | undefined {
  try {
    return new URL(target ?? '/', 'http://localhost').pathname;
  } catch {
    return undefined;
  }
}

const NOT_BUILT = Buffer.from(
  '<!doctype html><title>confab</title><p>The web app is not built. Run <code>npm run build</code>.</p>',
);

/** HTTP: the web app, /healthz, /metrics, and the WebSocket endpoint /ws. */
export class HttpListener {
  readonly stats = new TransportStats('ws');
  private readonly server: http.Server;
  private readonly wss: WebSocketServer;
  private readonly files: Map<string, StaticFile>;
  private readonly connections = new Set<WsConnection>();
  private readonly backlogs: Backlogs;
  private readonly partials: PartialFrames;
  private keepalive: NodeJS.Timeout | undefined;
  private address: PeerAddress = { ip: '', port: 0 };
  private readonly sockets: RawSockets;
  private readonly inFlight = new WeakMap<net.Socket, number>();
  /** Runs while a socket has no request in progress: from accept, and between requests. */
  private readonly idle = new WeakMap<net.Socket, Deadline>();
  private scrape:
    | { until: number; result: Promise<{ contentType: string; body: string }> }
    | undefined;

  constructor(
    private readonly chat: Chat,
    private readonly options: HttpOptions,
    private readonly log: Logger,
  ) {
    this.backlogs = options.backlogs ?? new Backlogs(options.limits, log);
    this.partials = options.partials ?? new PartialFrames(options.limits, log);
    this.sockets = new RawSockets(chat.admission, log);
    this.files = loadStatic(options.webRoot);
    if (this.files.size === 0)
      log.warn({ webRoot: options.webRoot }, 'web app not built; serving a placeholder');
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: options.limits.maxFrame,
      maxFragments: maxFragments(options.limits.maxFrame),
      perMessageDeflate: false,
      clientTracking: false,
    });
    this.server = http.createServer((req, res) => this.request(req, res));
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 30_000;
    this.server.on('connection', (socket: net.Socket) => this.accept(socket));
    this.server.on('upgrade', (req, socket, head) => this.upgrade(req, socket as net.Socket, head));
    // A failed listen() is its caller's to report; log only errors after that.
    this.server.on('error', (err) => {
      if (this.server.listening) log.error({ err }, 'http listener error');
    });
  }

  private accept(socket: net.Socket): void {
    const admitted = this.sockets.admit(socket);
    if (admitted === 'ok') {
      // Node's headersTimeout is checked lazily and misses a socket that sends
      // nothing, or half a request line; this bounds the wait for each request.
      const ms = this.options.limits.handshakeTimeoutMs || 120_000;
      this.idle.set(
        socket,
        new Deadline(socket, ms, () =>
          this.log.info({ ip: socket.remoteAddress }, 'no HTTP request in time, closing'),
        ),
      );
      return;
    }
    socket.end(
      admitted === 'banned'
        ? 'HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n'
        : 'HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n',
    );
    killAfter(Math.min(this.options.limits.closeTimeoutMs, 1000), socket, () => socket.destroy());
  }

  private request(req: http.IncomingMessage, res: http.ServerResponse): void {
    const socket = req.socket;
    // The rest of a pipelined batch is still parsed after the socket is destroyed.
    if (socket.destroyed) return;
    const waiting = (this.inFlight.get(socket) ?? 0) + 1;
    if (waiting > MAX_IN_FLIGHT) {
      this.log.warn({ ip: socket.remoteAddress }, 'too many pipelined requests, closing');
      socket.destroy();
      return;
    }
    this.inFlight.set(socket, waiting);
    this.idle.get(socket)?.stop();
    res.once('close', () => {
      const left = (this.inFlight.get(socket) ?? 1) - 1;
      this.inFlight.set(socket, left);
      if (left === 0) this.idle.get(socket)?.start();
    });
    this.handle(req, res).catch((err: unknown) => {
      this.log.error({ err }, 'http handler failed');
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  }

  /** One scrape serves every /metrics request for a second, however many arrive. */
  private metrics(): Promise<{ contentType: string; body: string }> {
    const now = Date.now();
    if (this.scrape === undefined || now >= this.scrape.until) {
      const result = this.options.metrics();
      this.scrape = { until: now + SCRAPE_CACHE_MS, result };
      result.catch(() => {
        if (this.scrape?.result === result) this.scrape = undefined;
      });
    }
    return this.scrape.result;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const pathname = pathOf(req.url);
    if (pathname === undefined) {
      res
        .writeHead(400, { 'content-type': 'text/plain', ...SECURITY_HEADERS })
        .end('bad request\n');
      return;
    }
    if (!this.hostAllowed(req)) {
      res
        .writeHead(403, { 'content-type': 'text/plain', ...SECURITY_HEADERS })
        .end('This server does not answer to this host name: add it to its --allowed-hosts.\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (pathname === '/healthz') {
      const health = await this.options.health();
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify({ status: 'ok', version: CONFAB_VERSION, ...health }));
      return;
    }
    if (pathname === '/metrics') {
      const { contentType, body } = await this.metrics();
      res.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store' });
      res.end(body);
      return;
    }
    const file = this.files.get(pathname === '/' ? '/index.html' : pathname);
    if (file === undefined) {
      if (pathname === '/') {
        res.writeHead(200, { 'content-type': TYPES['.html']!, ...SECURITY_HEADERS }).end(NOT_BUILT);
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain', ...SECURITY_HEADERS }).end('not found\n');
      return;
    }
    res.writeHead(200, {
      'content-type': file.type,
      'content-length': file.body.length,
      'cache-control': file.immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
      ...SECURITY_HEADERS,
    });
    res.end(req.method === 'HEAD' ? undefined : file.body);
  }

  /**
   * Whether the request names this server as a host it answers to: an IP address, localhost,
   * or a name of --allowed-hosts. A page of another name whose DNS answer was made to point
   * here (DNS rebinding) would be the page's own origin, and read /metrics or open /ws in
   * the visitor's browser, from inside the visitor's network. Requests without Host are not
   * from a browser (HTTP/1.0 tools): answered.
   */
  private hostAllowed(req: http.IncomingMessage): boolean {
    const host = req.headers.host;
    if (host === undefined) return true;
    const allowed = this.options.allowedHosts;
    if (allowed.includes('*')) return true;
    let name = hostName(host);
    // A fully qualified name's trailing dot names the same host.
    if (name.endsWith('.')) name = name.slice(0, -1);
    if (name === '') return this.refuseHost(host, req);
    // An IP address cannot be rebound; [::1] keeps its brackets in a URL's hostname.
    const bare = name.startsWith('[') ? name.slice(1, -1) : name;
    if (net.isIP(bare) !== 0 || name === 'localhost' || name.endsWith('.localhost')) return true;
    // Entries are written as the operator likes: with the trailing dot or without.
    return allowed.some((h) => h === name || h === `${name}.`) || this.refuseHost(host, req);
  }

  private refuseHost(host: string, req: http.IncomingMessage): false {
    const shown = clip(host);
    this.chat.refusals.log(
      'foreign-host',
      (held) =>
        this.log.warn(
          { host: shown, ...held },
          'request for a host name not in --allowed-hosts refused',
        ),
      req.socket.remoteAddress,
    );
    return false;
  }

  /** Browsers send Origin; only the page's own origin and the allow-list may connect. */
  private originAllowed(req: http.IncomingMessage): boolean {
    const origin = req.headers.origin;
    if (origin === undefined) return true; // not a browser: Origin protects browsers only
    const allowed = this.options.allowedOrigins;
    if (allowed.includes('*') || allowed.includes(origin)) return true;
    try {
      return new URL(origin).host === req.headers.host;
    } catch {
      return false;
    }
  }

  private upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    // Pipelined behind a request still being answered: that answer would be written
    // after the 101, into the WebSocket stream, and its end would start the wait for
    // the next HTTP request on what is a session by then. No browser sends that.
    if ((this.inFlight.get(socket) ?? 0) > 0) {
      this.log.info({ ip: socket.remoteAddress }, 'upgrade pipelined behind a request, closing');
      socket.destroy();
      return;
    }
    // From here the WebSocket session's own deadline (CONNECT) applies.
    this.idle.get(socket)?.stop();
    this.idle.delete(socket);
    const refuse = (status: number, text: string) => {
      socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      killAfter(this.options.limits.closeTimeoutMs, socket, () => socket.destroy());
    };
    if (pathOf(req.url) !== '/ws') {
      refuse(404, 'Not Found');
      return;
    }
    if (!this.hostAllowed(req)) {
      refuse(403, 'Forbidden');
      return;
    }
    if (!this.originAllowed(req)) {
      // The header is the client's (up to Node's 16 KiB header limit): clipped like every
      // client string in the log, so a refused upgrade makes one short line.
      const origin = req.headers.origin;
      const shown = origin === undefined ? undefined : clip(origin);
      this.chat.refusals.log(
        'foreign-origin',
        (held) =>
          this.log.warn({ origin: shown, ...held }, 'websocket from a foreign origin refused'),
        req.socket.remoteAddress,
      );
      refuse(403, 'Forbidden');
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const connection = new WsConnection(
        ws,
        req,
        this.address,
        this.chat,
        this.options.limits,
        this.log,
        this.stats,
        this.backlogs,
        this.partials,
      );
      this.connections.add(connection);
      ws.once('close', () => this.connections.delete(connection));
    });
  }

  async listen(): Promise<PeerAddress> {
    this.address = await listenOn(this.server, {
      host: this.options.host,
      port: this.options.port,
    });
    const every = this.options.limits.keepAliveMs;
    if (every > 0) {
      this.keepalive = setInterval(() => {
        for (const c of this.connections) c.ping();
      }, every);
      this.keepalive.unref();
    }
    return this.address;
  }

  /**
   * Stops accepting; resolves once every connection is closed, destroying
   * what is left (half-sent requests, upgrades) after the close timeout.
   */
  close(): Promise<void> {
    clearInterval(this.keepalive);
    const closed = this.sockets.close(this.server, this.options.limits.closeTimeoutMs);
    this.server.closeIdleConnections();
    return closed;
  }
}
