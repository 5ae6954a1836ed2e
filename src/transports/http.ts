import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { WebSocketServer } from 'ws';
import type { Chat } from '../core/chat.js';
import type { Logger, PeerAddress } from '../core/ports.js';
import { listenOn } from './lifecycle.js';
import { TransportStats } from './stats.js';
import type { StreamLimits } from './stream.js';
import { WsConnection } from './websocket.js';

export interface HttpOptions {
  host: string;
  port: number;
  limits: StreamLimits;
  /** The built web app; served from memory, so nothing outside it can be reached. */
  webRoot: string;
  /** Origins allowed to open /ws besides the page's own; "*" allows any. */
  allowedOrigins: readonly string[];
  metrics: () => Promise<{ contentType: string; body: string }>;
  health: () => object;
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
  private keepalive: NodeJS.Timeout | undefined;
  private address: PeerAddress = { ip: '', port: 0 };

  constructor(
    private readonly chat: Chat,
    private readonly options: HttpOptions,
    private readonly log: Logger,
  ) {
    this.files = loadStatic(options.webRoot);
    if (this.files.size === 0)
      log.warn({ webRoot: options.webRoot }, 'web app not built; serving a placeholder');
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: options.limits.maxFrame,
      perMessageDeflate: false,
      clientTracking: false,
    });
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        log.error({ err }, 'http handler failed');
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    });
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 30_000;
    this.server.on('upgrade', (req, socket, head) => this.upgrade(req, socket as net.Socket, head));
    // A failed listen() is its caller's to report; log only errors after that.
    this.server.on('error', (err) => {
      if (this.server.listening) log.error({ err }, 'http listener error');
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url.pathname === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify({ status: 'ok', ...this.options.health() }));
      return;
    }
    if (url.pathname === '/metrics') {
      const { contentType, body } = await this.options.metrics();
      res.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store' });
      res.end(body);
      return;
    }
    const file = this.files.get(url.pathname === '/' ? '/index.html' : url.pathname);
    if (file === undefined) {
      if (url.pathname === '/') {
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
    const refuse = (status: number, text: string) => {
      socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    };
    if (new URL(req.url ?? '/', 'http://localhost').pathname !== '/ws') {
      refuse(404, 'Not Found');
      return;
    }
    if (!this.originAllowed(req)) {
      this.log.warn({ origin: req.headers.origin }, 'websocket from a foreign origin refused');
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

  /** Stops accepting; resolves once every connection is closed. */
  close(): Promise<void> {
    clearInterval(this.keepalive);
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
  }
}
