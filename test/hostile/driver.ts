import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import WebSocket from 'ws';
import { type ParsedServerMessage, parseServerText } from '../../src/protocol/message-codec.js';
import { visible } from '../../src/protocol/text.js';
import { RawClient } from '../helpers/raw-client.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';
import { makeCertificate } from '../helpers/tls-cert.js';
import {
  ALL_CAPS,
  type Attack,
  type Batch,
  batchAt,
  concat,
  describeAttack,
  HONEST_ADDRESS,
  nestingDepth,
} from './inputs.js';

/**
 * The server's resident memory may not pass this. An idle confab is about
 * 60-80 MiB; what attackers can make it hold is bounded by --max-frame per
 * connection (a few connections at a time here) and by the transient objects
 * of parsing one frame, a few MiB. 300 MiB leaves room for garbage the
 * collector has not reached yet, and is still far below what buffering whole
 * hostile streams, or leaking per connection over a long run, would reach.
 */
export const RSS_LIMIT_KIB = 300 * 1024;

/** What the server logs when its fault boundary catches an exception (core/chat.ts). */
const FAULT = 'internal error while serving a connection';

/** Generous: a loaded 2-core CI machine must not produce false alarms. */
const REPLY_TIMEOUT_MS = 10_000;

/** Flood control is 20/s after a burst of 40: the well-behaved clients stay under it. */
const WELL_BEHAVED_GAP_MS = 60;

const SENDER = 'sender';
/** Text a course client must get back byte for byte: quotes, escapes, astral and wide characters. */
const SENDER_TEXT = 'ü "q" \\ 😀 \u2028 한 \t';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const turn = () => new Promise<void>((r) => setImmediate(r));

class Pacer {
  private last = 0;
  async next(): Promise<void> {
    const wait = this.last + WELL_BEHAVED_GAP_MS - Date.now();
    if (wait > 0) await sleep(wait);
    this.last = Date.now();
  }
}

let certs: { dir: string; cert: string; key: string } | undefined;

/** A self-signed certificate for 127.0.0.1, made once per process with openssl. */
function certificate(): { cert: string; key: string } {
  if (certs !== undefined) return certs;
  certs = makeCertificate();
  return certs;
}

/** Where room history is kept while under attack: the product's default, SQLite, or memory. */
export type History = 'memory' | 'sqlite';
const dataDirs: string[] = [];

/** Removes the certificate and every data directory a run made. */
export function removeCertificate(): void {
  if (certs !== undefined) rmSync(certs.dir, { recursive: true, force: true });
  certs = undefined;
  for (const dir of dataDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** The server under attack, as its own process. */
export class Target {
  private constructor(
    readonly server: SpawnedServer,
    readonly tcpPort: number,
    readonly tlsPort: number,
    readonly httpPort: number,
  ) {}

  static async start(history: History = 'memory'): Promise<Target> {
    const { cert, key } = certificate();
    let dataDir: string | undefined;
    if (history === 'sqlite') {
      dataDir = mkdtempSync(path.join(os.tmpdir(), 'confab-hostile-'));
      dataDirs.push(dataDir);
    }
    const server = await spawnServer(
      [
        ...(dataDir === undefined ? [] : ['--history', 'sqlite', '--data-dir', dataDir]),
        '--tls-port',
        '0',
        '--tls-cert',
        cert,
        '--tls-key',
        key,
        // Room for the bystanders, a probe and the attackers of a batch; low
        // enough that members who never leave would soon fill it.
        '--max-users',
        '64',
        '--max-conns-per-ip',
        '0',
        '--handshake-timeout',
        '10',
        '--shutdown-timeout',
        '1',
      ],
      {},
      256 * 1024,
    );
    const target = new Target(server, server.port, server.tlsPort!, server.httpPort!);
    // Whole lines only: a chunk may end mid-line.
    let partial = '';
    const scan = (data: Buffer) => {
      const lines = (partial + data.toString()).split('\n');
      partial = lines.pop()!.slice(-4096);
      for (const l of lines) if (l.includes(FAULT)) target.faults.push(l.slice(0, 1000));
    };
    server.child.stdout!.on('data', scan);
    server.child.stderr!.on('data', scan);
    return target;
  }

  /**
   * Log lines of the per-connection fault boundary: something threw while
   * serving an attacker. It only ended that connection, but it is a defect.
   */
  readonly faults: string[] = [];

  get pid(): number {
    return this.server.child.pid!;
  }

  alive(): boolean {
    return this.server.child.exitCode === null && this.server.child.signalCode === null;
  }

  exitStatus(): string {
    const { exitCode, signalCode } = this.server.child;
    return signalCode !== null ? `killed by ${signalCode}` : `exit code ${exitCode}`;
  }

  rssKiB(): number {
    try {
      const status = readFileSync(`/proc/${this.pid}/status`, 'utf8');
      return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    } catch {
      return 0;
    }
  }

  async health(): Promise<{ users: number; connections: number }> {
    return JSON.parse(await this.get('/healthz')) as { users: number; connections: number };
  }

  /** Heap in use and open handles, from /metrics: a slow leak shows there before RSS. */
  async internals(): Promise<string> {
    const text = await this.get('/metrics').catch(() => '');
    const read = (name: string) =>
      Number(new RegExp(`^confab_${name} (\\S+)$`, 'm').exec(text)?.[1]);
    const heap = read('nodejs_heap_size_used_bytes') / 2 ** 20;
    const kinds = [...text.matchAll(/^confab_nodejs_active_handles\{type="(\w+)"\} (\d+)$/gm)]
      .map((m) => `${m[1]} ${m[2]}`)
      .join(', ');
    return `heap used ${heap.toFixed(1)} MiB, handles ${read('nodejs_active_handles_total')} (${kinds})`;
  }

  private get(pathname: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = http.get(
        // No keep-alive: a connection of ours must not count among the server's handles.
        {
          host: '127.0.0.1',
          port: this.httpPort,
          path: pathname,
          timeout: REPLY_TIMEOUT_MS,
          agent: false,
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            body += d;
          });
          res.on('end', () => resolve(body));
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${pathname} did not answer`)));
      req.on('error', reject);
    });
  }

  /** The end of the server's output, where a crash prints its stack. */
  outputTail(chars = 3000): string {
    const out = this.server.output();
    return out.slice(Math.max(0, out.length - chars));
  }

  stop(): Promise<void> {
    return this.server.stop();
  }
}

/** A WebSocket member that records every message and anything that is not one JSON object. */
class WsClient {
  readonly received: ParsedServerMessage[] = [];
  readonly broken: string[] = [];
  isClosed = false;
  closeCode = 0;
  private waiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      const text = String(data);
      const message = parseServerText(text);
      if (message === undefined) this.broken.push(text);
      else this.received.push(message);
      this.wake();
    });
    ws.on('error', () => {});
    ws.on('close', (code) => {
      this.isClosed = true;
      this.closeCode = code;
      this.wake();
    });
  }

  static open(port: number, localAddress = HONEST_ADDRESS): Promise<WsClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { localAddress });
      const client = new WsClient(ws);
      ws.once('open', () => resolve(client));
      ws.once('error', reject);
      ws.once('unexpected-response', () => reject(new Error('WebSocket upgrade refused')));
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  send(request: object): void {
    this.ws.send(JSON.stringify(request));
  }

  async expect(cmd: string, timeoutMs: number): Promise<ParsedServerMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.received.findIndex((m) => m.cmd === cmd);
      if (i >= 0) return this.received.splice(i, 1)[0]!;
      if (this.isClosed) throw new Error(`closed (${this.closeCode}) while waiting for "${cmd}"`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for "${cmd}"`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  close(): void {
    this.ws.terminate();
  }
}

/** One well-behaved member, whatever its transport. */
interface Member {
  readonly label: string;
  send(request: object): void;
  expect(cmd: string, timeoutMs: number): Promise<ParsedServerMessage>;
  /** Takes every message received so far, and every frame that did not parse. */
  take(): { messages: ParsedServerMessage[]; broken: string[] };
  closed(): boolean;
  close(): void;
  readonly pacer: Pacer;
}

function streamMember(label: string, client: RawClient): Member {
  return {
    label,
    pacer: new Pacer(),
    send: (request) => client.write(`${JSON.stringify(request)}\n`),
    expect: (cmd, ms) => client.expect(cmd, ms),
    take: () => {
      const frames = client.rawFrames.splice(0);
      return {
        messages: client.drain(),
        broken: frames.filter((f) => parseServerText(f) === undefined),
      };
    },
    closed: () => client.isClosed,
    close: () => client.close(),
  };
}

function wsMember(label: string, client: WsClient): Member {
  return {
    label,
    pacer: new Pacer(),
    send: (request) => client.send(request),
    expect: (cmd, ms) => client.expect(cmd, ms),
    take: () => ({ messages: client.received.splice(0), broken: client.broken.splice(0) }),
    closed: () => client.isClosed,
    close: () => client.close(),
  };
}

function openTcp(port: number, localAddress = HONEST_ADDRESS): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress, noDelay: true });
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(RawClient.wrap(socket));
    });
    socket.once('error', reject);
  });
}

function openTls(port: number, localAddress = HONEST_ADDRESS): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const raw = net.connect({ port, host: '127.0.0.1', localAddress });
    raw.on('error', reject);
    const socket = tls.connect({ socket: raw, rejectUnauthorized: false });
    socket.once('secureConnect', () => {
      socket.off('error', reject);
      socket.setNoDelay(true);
      resolve(RawClient.wrap(socket));
    });
    socket.once('error', reject);
  });
}

async function joinMember(
  target: Target,
  transport: 'tcp' | 'tls' | 'ws',
  nickname: string,
  caps?: string[],
): Promise<Member> {
  const connect = caps === undefined ? { cmd: '0', nickname } : { cmd: '0', nickname, caps };
  const member =
    transport === 'ws'
      ? wsMember(nickname, await WsClient.open(target.httpPort))
      : streamMember(
          nickname,
          transport === 'tcp' ? await openTcp(target.tcpPort) : await openTls(target.tlsPort),
        );
  await member.pacer.next();
  member.send(connect);
  await member.expect('03', REPLY_TIMEOUT_MS);
  return member;
}

/** What each kind of bystander may legitimately receive besides the sender's chats. */
const ALLOWED: Record<string, ReadonlySet<string>> = {
  course: new Set(['70', '8', '30', '40']),
  negotiated: new Set(['70', '8', '30', '40', '91']),
  web: new Set(['70', '8', '30', '40']),
};

class InvariantError extends Error {}

/** The well-behaved side of the room: one sender and three bystanders. */
class Room {
  /** The sender's chats since the last check, and how many it sent before them. */
  private sent: string[] = [];
  private counted = 0;
  private probes = 0;

  private constructor(
    private readonly target: Target,
    private readonly sender: Member,
    private readonly bystanders: { kind: string; member: Member }[],
  ) {}

  static async open(target: Target): Promise<Room> {
    const sender = await joinMember(target, 'tcp', SENDER, ['errors']);
    const bystanders = [
      { kind: 'course', member: await joinMember(target, 'tcp', 'by-course') },
      {
        kind: 'negotiated',
        member: await joinMember(target, 'tls', 'by-tls', ['errors', 'renames', 'whispers']),
      },
      { kind: 'web', member: await joinMember(target, 'ws', 'by-web') },
    ];
    return new Room(target, sender, bystanders);
  }

  /** Sends one numbered chat, within flood control. */
  async chat(): Promise<void> {
    if (this.sender.closed()) return;
    await this.sender.pacer.next();
    const msg = `#${this.counted + this.sent.length} ${SENDER_TEXT}`;
    this.sent.push(msg);
    this.sender.send({ cmd: '7', msg });
  }

  /**
   * Every invariant, after a batch. A round trip from the sender orders after
   * its chats; a round trip from each bystander then orders after the chats
   * it was sent, so everything must have arrived by its reply.
   */
  async check(index: number): Promise<void> {
    try {
      await this.checkAll(index);
    } catch (err) {
      // A dying server first drops its connections: name the cause, not the symptom.
      await sleep(300);
      if (!this.target.alive())
        throw new InvariantError(`the server process died (${this.target.exitStatus()})`);
      throw err;
    }
  }

  private async checkAll(index: number): Promise<void> {
    const fail = (what: string): never => {
      throw new InvariantError(what);
    };
    if (!this.target.alive()) fail(`the server process died (${this.target.exitStatus()})`);
    if (this.target.faults.length > 0)
      fail(`the server caught an internal error: ${this.target.faults[0]}`);
    if (this.sender.closed()) fail('the well-behaved sender was disconnected');
    await this.sender.pacer.next();
    this.sender.send({ cmd: '6', beginTime: index });
    await this.sender
      .expect('60', REPLY_TIMEOUT_MS)
      .catch((err: Error) => fail(`the sender got no RTT reply: ${err.message}`));
    const refused = this.sender.take().messages.filter((m) => m.cmd === '90');
    if (refused.length > 0) fail(`the sender was refused: ${JSON.stringify(refused[0])}`);
    await Promise.all(
      this.bystanders.map(async ({ kind, member }) => {
        if (member.closed()) fail(`the ${kind} bystander was disconnected`);
        await member.pacer.next();
        member.send({ cmd: '4' });
        await member
          .expect('40', REPLY_TIMEOUT_MS)
          .catch((err: Error) =>
            fail(`the ${kind} bystander got no VERSION reply: ${err.message}`),
          );
        const { messages, broken } = member.take();
        if (broken.length > 0)
          fail(`the ${kind} bystander got a broken frame: ${broken[0]!.slice(0, 200)}`);
        let next = 0;
        for (const m of messages) {
          if (!ALLOWED[kind]!.has(m.cmd))
            fail(`the ${kind} bystander got ${JSON.stringify(m).slice(0, 200)}`);
          if (m.cmd !== '70' || m.from !== SENDER) continue;
          // A course client is sent the text with control characters made visible.
          const due = kind === 'course' ? visible(this.sent[next] ?? '') : this.sent[next];
          if (m.msg !== due)
            fail(
              `the ${kind} bystander got ${JSON.stringify(m.msg)} where ${JSON.stringify(due)} was due`,
            );
          next++;
        }
        if (next !== this.sent.length)
          fail(
            `the ${kind} bystander got ${next} of the sender's last ${this.sent.length} messages`,
          );
      }),
    );
    // Everyone has everything so far: keep only what comes next (long runs stay small).
    this.counted += this.sent.length;
    this.sent = [];
    const transport = (['tcp', 'tls', 'ws'] as const)[this.probes % 3]!;
    const probe = await joinMember(this.target, transport, `probe${this.probes++}`).catch(
      (err: Error) => fail(`a fresh ${transport} connection was not admitted: ${err.message}`),
    );
    probe.close();
    // Every attacker and the probe are gone: the server must have let go of them.
    let health = { users: -1, connections: -1 };
    for (let i = 0; i < 100; i++) {
      health = await this.target.health().catch(() => health);
      if (health.connections === 4 && health.users === 4) break;
      await sleep(50);
    }
    if (health.connections !== 4 || health.users !== 4)
      fail(
        `connections/users stayed at ${health.connections}/${health.users} after the attackers left (expected 4/4)`,
      );
    const rss = this.target.rssKiB();
    if (rss > RSS_LIMIT_KIB)
      fail(`resident memory ${Math.round(rss / 1024)} MiB is over ${RSS_LIMIT_KIB / 1024} MiB`);
  }

  close(): void {
    for (const m of [this.sender, ...this.bystanders.map((b) => b.member)]) m.close();
  }
}

const enc = new TextEncoder();

/** Cuts bytes into writes of the attack's sizes; never more than 512 writes. */
function* cut(data: Uint8Array, sizes: number[]): Generator<Uint8Array> {
  const floor = Math.ceil(data.length / 512);
  let at = 0;
  let k = 0;
  while (at < data.length) {
    const size = Math.max(sizes[k++ % sizes.length]!, floor);
    yield data.subarray(at, at + size);
    at += size;
  }
}

/** Waits for `closed`, at most `ms`. */
function closedWithin(
  isClosed: () => boolean,
  closed: Promise<unknown>,
  ms: number,
): Promise<void> {
  if (isClosed()) return Promise.resolve();
  return Promise.race([closed.then(() => {}), sleep(ms)]);
}

async function attackStream(target: Target, attack: Attack, nickname: string): Promise<void> {
  const client = await (attack.transport === 'tcp'
    ? openTcp(target.tcpPort, attack.from)
    : openTls(target.tlsPort, attack.from)
  ).catch(() => undefined);
  if (client === undefined) return;
  try {
    let token: string | undefined;
    if (attack.joined) {
      const caps = attack.caps ? `,"caps":${JSON.stringify(ALL_CAPS)}` : '';
      client.write(`{"cmd":"0","nickname":"${nickname}"${caps}}\n`);
      await client.expect('03', REPLY_TIMEOUT_MS).then(
        (welcome) => {
          tally.joined++;
          token = tokenOf(welcome);
        },
        () => {},
      );
    }
    const payload = concat(attack.pieces);
    for (const chunk of cut(payload, attack.chunks)) {
      if (client.isClosed || client.socket.destroyed) break;
      const flushed = client.socket.write(chunk);
      if (attack.spread) await turn();
      else if (!flushed)
        await Promise.race([new Promise((r) => client.socket.once('drain', r)), client.closed]);
    }
    // Resumers race the attacker's own requests, still being handled.
    if (token !== undefined) await resumeAll(target, attack, nickname, token);
    // Let the server read it all before a reset can discard it.
    await closedWithin(
      () => client.isClosed,
      client.closed,
      Math.min(300, 30 + payload.length / 4096),
    );
    if (client.isClosed) tally.cutOff++;
    switch (attack.ending) {
      case 'end':
        client.end();
        await closedWithin(() => client.isClosed, client.closed, 300);
        break;
      case 'exit':
        client.write('{"cmd":"3"}\n');
        await closedWithin(() => client.isClosed, client.closed, 300);
        break;
      case 'linger':
        await closedWithin(() => client.isClosed, client.closed, 150);
        break;
      default:
    }
  } finally {
    client.close();
  }
}

async function attackWs(target: Target, attack: Attack, nickname: string): Promise<void> {
  const client = await WsClient.open(target.httpPort, attack.from).catch(() => undefined);
  if (client === undefined) return;
  const closed = new Promise((r) => client.ws.once('close', r));
  try {
    let token: string | undefined;
    if (attack.joined) {
      client.send(attack.caps ? { cmd: '0', nickname, caps: ALL_CAPS } : { cmd: '0', nickname });
      await client.expect('03', REPLY_TIMEOUT_MS).then(
        (welcome) => {
          tally.joined++;
          token = tokenOf(welcome);
        },
        () => {},
      );
    }
    let total = 0;
    for (const piece of attack.pieces) {
      if (client.ws.readyState !== WebSocket.OPEN) break;
      total += piece.length;
      if (attack.wsFraming === 'fragmented' && piece.length > 1) {
        const a = Math.floor(piece.length / 3);
        const b = Math.floor((2 * piece.length) / 3);
        client.ws.send(piece.subarray(0, a), { binary: false, fin: false });
        client.ws.send(piece.subarray(a, b), { binary: false, fin: false });
        client.ws.send(piece.subarray(b), { binary: false, fin: true });
      } else {
        client.ws.send(piece, { binary: attack.wsFraming === 'binary' });
      }
    }
    if (token !== undefined) await resumeAll(target, attack, nickname, token);
    await closedWithin(() => client.isClosed, closed, Math.min(300, 30 + total / 4096));
    if (client.isClosed) tally.cutOff++;
    switch (attack.ending) {
      case 'end':
        if (client.ws.readyState === WebSocket.OPEN) client.ws.close(1000);
        await closedWithin(() => client.isClosed, closed, 300);
        break;
      case 'exit':
        if (client.ws.readyState === WebSocket.OPEN) client.ws.send(enc.encode('{"cmd":"3"}'));
        await closedWithin(() => client.isClosed, closed, 300);
        break;
      case 'linger':
        await closedWithin(() => client.isClosed, closed, 150);
        break;
      default:
    }
  } finally {
    client.close();
  }
}

/** Raw bytes to the HTTP port or, in plain text, to the TLS port; whatever comes back is read and dropped. */
async function attackRaw(target: Target, attack: Attack): Promise<void> {
  const port = attack.transport === 'http' ? target.httpPort : target.tlsPort;
  const socket = net.connect({ port, host: '127.0.0.1', localAddress: attack.from, noDelay: true });
  socket.on('error', () => {});
  socket.resume();
  const closed = new Promise((r) => socket.once('close', r));
  const isClosed = () => socket.destroyed;
  try {
    await Promise.race([new Promise((r) => socket.once('connect', r)), closed]);
    const payload = concat(attack.pieces);
    for (const chunk of cut(payload, attack.chunks)) {
      if (socket.destroyed) break;
      const flushed = socket.write(chunk);
      if (attack.spread) await turn();
      else if (!flushed) await Promise.race([new Promise((r) => socket.once('drain', r)), closed]);
    }
    await closedWithin(isClosed, closed, Math.min(300, 30 + payload.length / 4096));
    if (socket.destroyed) tally.cutOff++;
    if (attack.ending === 'end') {
      socket.end();
      await closedWithin(isClosed, closed, 300);
    } else if (attack.ending === 'linger') {
      await closedWithin(isClosed, closed, 150);
    }
  } finally {
    socket.destroy();
  }
}

function tokenOf(welcome: ParsedServerMessage): string | undefined {
  const token = (welcome as { resume?: unknown }).resume;
  return typeof token === 'string' ? token : undefined;
}

/**
 * The attack's resumers, all at once, each on the attack's transport: CONNECT
 * with the token and the attack's "since", then the pieces again, then gone.
 * One of them at most takes the session back; the others join as themselves.
 */
async function resumeAll(
  target: Target,
  attack: Attack,
  nickname: string,
  token: string,
): Promise<void> {
  const connect = (k: number) =>
    `${JSON.stringify({ cmd: '0', nickname: `${nickname}r${k}`, caps: ALL_CAPS, resume: token, since: attack.since })}\n`;
  await Promise.all(
    Array.from({ length: attack.resumers }, async (_, k) => {
      tally.resumes++;
      if (attack.transport === 'ws') {
        const ws = await WsClient.open(target.httpPort, attack.from).catch(() => undefined);
        if (ws === undefined) return;
        try {
          ws.ws.send(connect(k));
          const welcome = await ws.expect('03', REPLY_TIMEOUT_MS).catch(() => undefined);
          if (welcome !== undefined && (welcome as { resumed?: unknown }).resumed === true)
            tally.resumed++;
          for (const piece of attack.pieces) {
            if (ws.ws.readyState === WebSocket.OPEN) ws.ws.send(piece);
          }
          await sleep(50);
        } finally {
          ws.close();
        }
        return;
      }
      const client = await (attack.transport === 'tcp'
        ? openTcp(target.tcpPort, attack.from)
        : openTls(target.tlsPort, attack.from)
      ).catch(() => undefined);
      if (client === undefined) return;
      try {
        client.write(connect(k));
        const welcome = await client.expect('03', REPLY_TIMEOUT_MS).catch(() => undefined);
        if (welcome !== undefined && (welcome as { resumed?: unknown }).resumed === true)
          tally.resumed++;
        const payload = concat(attack.pieces);
        for (const chunk of cut(payload, attack.chunks)) {
          if (client.isClosed || client.socket.destroyed) break;
          client.socket.write(chunk);
        }
        await closedWithin(() => client.isClosed, client.closed, 50);
      } finally {
        client.close();
      }
    }),
  );
}

/** What the attackers achieved, to show that they reach the server at all. */
export interface Tally {
  attacks: number;
  /** Attackers that meant to join and were let in. */
  joined: number;
  /** Attackers the server closed before they left on their own. */
  cutOff: number;
  /** Connections that presented an attacker's resume token, and those that took its session. */
  resumes: number;
  resumed: number;
}
let tally: Tally = { attacks: 0, joined: 0, cutOff: 0, resumes: 0, resumed: 0 };

/** Above this many bytes an attack runs once, however large its swarm: CPU and bytes stay bounded. */
const SWARM_BYTES = 4096;

async function runAttack(target: Target, attack: Attack, nickname: string): Promise<void> {
  const size = attack.pieces.reduce((n, p) => n + p.length, 0);
  const copies = size <= SWARM_BYTES ? attack.swarm : 1;
  if (copies === 1) return runOne(target, attack, nickname);
  await Promise.all(
    Array.from({ length: copies }, (_, k) => runOne(target, attack, `${nickname}_${k}`)),
  );
}

function runOne(target: Target, attack: Attack, nickname: string): Promise<void> {
  tally.attacks++;
  switch (attack.transport) {
    case 'ws':
      return attackWs(target, attack, nickname);
    case 'http':
    case 'tls-plain':
      return attackRaw(target, attack);
    default:
      return attackStream(target, attack, nickname);
  }
}

/** One batch: its attackers at once, the sender chatting before, during and after. */
async function runBatch(target: Target, room: Room, batch: Batch, index: number): Promise<void> {
  await room.chat();
  const attacks = Promise.all(
    batch.attacks.map((a, i) => runAttack(target, a, `atk${index}_${i}`)),
  );
  await room.chat();
  await room.chat();
  await attacks;
  await room.chat();
  await room.check(index);
}

export interface RunOptions {
  seed: number;
  /** Run batches 0, 1, … until this many have run or `until` passes. */
  batches?: number;
  /** Stop starting batches after this time (ms since the epoch). */
  until?: number;
  /** Run these batches instead of generated ones. */
  cases?: Batch[];
  /** Run only this batch (a replay). */
  only?: number;
  /** After a failure, replay its pieces one by one to find one that fails alone (ms budget). */
  isolateMs?: number;
  /**
   * Leave out pieces nesting deeper than this, to look past a known
   * deep-nesting failure until its fix lands.
   */
  maxDepth?: number;
  /** After a failure, restart the server and go on with the next batch (to collect several). */
  keepGoing?: boolean;
  /** Where the server under attack keeps room history (default memory). */
  history?: History;
  log?: (line: string) => void;
}

export interface RunResult {
  ok: boolean;
  seed: number;
  batches: number;
  tally: Tally;
  peakRssKiB: number;
  /** Set on failure: what failed, the batch, the server's last words, a replay command. */
  report?: string;
}

/** Runs one batch against a fresh server; a failure comes back as its message. */
async function tryAlone(
  batch: Batch,
  index: number,
  history: History,
): Promise<string | undefined> {
  const target = await Target.start(history);
  let room: Room | undefined;
  try {
    room = await Room.open(target);
    await runBatch(target, room, batch, index);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  } finally {
    room?.close();
    await target.stop();
  }
}

/** Finds the single piece of a failing batch that still fails on its own, if there is one. */
async function isolate(
  batch: Batch,
  index: number,
  budgetMs: number,
  history: History,
): Promise<string> {
  const deadline = Date.now() + budgetMs;
  for (const attack of batch.attacks) {
    for (const piece of attack.pieces) {
      if (Date.now() > deadline)
        return 'no single piece found to fail alone within the time budget';
      const alone: Attack = { ...attack, pieces: [piece] };
      const failure = await tryAlone({ attacks: [alone] }, index, history);
      if (failure !== undefined)
        return `this piece alone fails (${failure}):\n${describeAttack(alone)}`;
    }
  }
  return 'no single piece fails alone: the combination matters';
}

function withoutDeep(batch: Batch, maxDepth: number): Batch {
  const attacks = batch.attacks.map((a) => {
    const pieces = a.pieces.filter((p) => nestingDepth(p) <= maxDepth);
    return { ...a, pieces: pieces.length > 0 ? pieces : [enc.encode('{"cmd":"4"}')] };
  });
  return { attacks };
}

/** What failed, the batch, the server's last words and how to replay it. */
async function failureReport(
  err: unknown,
  target: Target,
  seed: number,
  index: number,
  batch: Batch | undefined,
  fixed: boolean,
  history: History,
): Promise<string> {
  await sleep(200); // let a dying server finish printing
  return [
    fixed
      ? `FAILED at fixed case ${index} (FIXED_CASES in test/hostile/inputs.ts): ${(err as Error).message}`
      : `FAILED at batch ${index} of seed ${seed}: ${(err as Error).message}`,
    `(${err instanceof InvariantError ? 'invariant' : 'driver error'}; server ${target.alive() ? 'alive' : target.exitStatus()})`,
    fixed
      ? 'replay: npx vitest run test/hostile'
      : `replay: npm run fuzz -- --seed ${seed} --batch ${index} --history ${history}`,
    'the batch:',
    ...(batch?.attacks.map(describeAttack) ?? []),
    'server output, last lines:',
    target.outputTail(),
  ].join('\n');
}

export async function runHostile(options: RunOptions): Promise<RunResult> {
  const log = options.log ?? (() => {});
  const { seed } = options;
  const history = options.history ?? 'memory';
  let target = await Target.start(history);
  let room: Room | undefined;
  let ran = 0;
  tally = { attacks: 0, joined: 0, cutOff: 0, resumes: 0, resumed: 0 };
  let peak = 0;
  let index = options.only ?? 0;
  const reports: string[] = [];
  try {
    room = await Room.open(target);
    for (;;) {
      if (
        options.cases !== undefined
          ? ran === options.cases.length
          : options.only !== undefined
            ? ran === 1
            : options.batches !== undefined && ran >= options.batches
      )
        break;
      if (options.until !== undefined && Date.now() >= options.until) break;
      let batch: Batch | undefined;
      try {
        batch = options.cases?.[index] ?? batchAt(seed, index);
        const { maxDepth } = options;
        if (maxDepth !== undefined) batch = withoutDeep(batch, maxDepth);
        await runBatch(target, room, batch, index);
      } catch (err) {
        const report = await failureReport(
          err,
          target,
          seed,
          index,
          batch,
          options.cases !== undefined,
          history,
        );
        room.close();
        room = undefined;
        await target.stop();
        const isolated =
          options.isolateMs !== undefined && batch !== undefined
            ? ['isolating:', await isolate(batch, index, options.isolateMs, history)]
            : [];
        reports.push([report, ...isolated].join('\n'));
        if (options.keepGoing !== true) break;
        log(reports.at(-1)!);
        target = await Target.start(history);
        room = await Room.open(target);
      }
      peak = Math.max(peak, target.rssKiB());
      ran++;
      if (ran % 25 === 0)
        log(
          `${ran} batches, server RSS ${Math.round(target.rssKiB() / 1024)} MiB, ${await target.internals()}`,
        );
      index++;
    }
    return {
      ok: reports.length === 0,
      seed,
      batches: ran,
      tally,
      peakRssKiB: peak,
      ...(reports.length > 0 ? { report: reports.join('\n\n') } : {}),
    };
  } finally {
    room?.close();
    await target.stop();
  }
}
