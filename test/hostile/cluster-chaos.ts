/**
 * Random sequences of legal actions against a Redis cluster of confab nodes, with
 * invariants checked against what every client saw. Seeded and bounded:
 *
 *   npx tsx test/hostile/cluster-chaos.ts [seed] [rounds] [clients] [course]
 *
 * Starts its own redis-server and three nodes (each in its own process group), and
 * stops them at the end. Prints every broken invariant as "VIOLATION ...".
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startRedis } from '../helpers/redis.js';

const seed = Number(process.argv[2] ?? 1);
const ROUNDS = Number(process.argv[3] ?? 6);
const N_EXT = Number(process.argv[4] ?? 14);
const N_COURSE = Number(process.argv[5] ?? 3);
const N_NODES = 3;
const CLUSTER_TIMEOUT = 3;
const ROOMS = ['lobby', 'r1', 'r2', 'R1x'];
const NAMES = Array.from({ length: N_EXT + 8 }, (_, i) => `n${i}`);
const CLI = path.resolve('dist/cli/main.js');
const HARD_DEADLINE = Date.now() + Number(process.env.CHAOS_SECONDS ?? 300) * 1000;

let rngState = seed >>> 0 || 1;
function rnd(): number {
  rngState ^= rngState << 13;
  rngState >>>= 0;
  rngState ^= rngState >>> 17;
  rngState ^= rngState << 5;
  rngState >>>= 0;
  return rngState / 2 ** 32;
}
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();
const mainLog: string[] = [];
const log = (...a: unknown[]) =>
  mainLog.push(a.map(String).join(' ')) &&
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}]`, ...a);
const violations: string[] = [];
function violation(what: string): void {
  violations.push(what);
  log('VIOLATION', what);
}

// ---------------------------------------------------------------- processes
const children: ChildProcess[] = [];
function start(cmd: string, args: string[]): ChildProcess {
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return child;
}
function killGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, sig);
  } catch {}
}
interface Node {
  index: number;
  child: ChildProcess;
  port: number;
  out: string;
  up: boolean;
  paused: boolean;
}
const nodes: Node[] = [];
let redisPort = 0;

async function startNode(index: number): Promise<Node> {
  const child = start(process.execPath, [
    CLI,
    'serve',
    '--redis',
    `redis://127.0.0.1:${redisPort}`,
    '--port',
    '0',
    '--http-port',
    '0',
    '--log-format',
    'json',
    '--cluster-timeout',
    String(CLUSTER_TIMEOUT),
    '--rate-limit',
    '0',
    '--max-users',
    '100',
    '--history-on-join',
    '5',
  ]);
  const node: Node = { index, child, port: 0, out: '', up: false, paused: false };
  const collect = (d: Buffer) => {
    node.out += d.toString();
    if (node.out.length > 2_000_000) node.out = node.out.slice(-1_000_000);
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  child.on('exit', (code, sig) => {
    node.up = false;
    if (!node.expectExit)
      violation(`node ${index} exited unexpectedly: ${code} ${sig}\n${node.out.slice(-3000)}`);
  });
  for (let i = 0; i < 300 && node.port === 0; i++) {
    for (const line of node.out.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const e = JSON.parse(line) as { transport?: string; port?: number };
        if (e.transport === 'tcp' && typeof e.port === 'number') node.port = e.port;
      } catch {}
    }
    await sleep(50);
  }
  if (node.port === 0) throw new Error(`node ${index} did not start: ${node.out}`);
  node.up = true;
  return node;
}
interface Node {
  expectExit?: boolean;
}

function redisCli(...args: string[]): string {
  return execFileSync('redis-cli', ['-p', String(redisPort), ...args], { encoding: 'utf8' });
}

// ---------------------------------------------------------------- truth
/** room/epoch/id -> msg */
const stored = new Map<string, string>();
/** msg -> room/epoch/id */
const storedBy = new Map<string, string>();
const topSeen = new Map<string, number>(); // room|epoch -> max id
function record(room: string, epoch: string, id: number, msg: string, who: string): void {
  const key = `${room}|${epoch}|${id}`;
  const prev = stored.get(key);
  if (prev !== undefined && prev !== msg)
    violation(`${who}: ${key} is "${msg}" but another saw "${prev}"`);
  stored.set(key, msg);
  const where = storedBy.get(msg);
  if (where !== undefined && where !== key && !msg.startsWith('w:'))
    violation(
      `${who}: message "${msg}" stored twice: ${where} and ${key}\n  ${(exts[Number(msg.slice(1).split('.')[0])]?.log ?? []).join('\n  ')}`,
    );
  storedBy.set(msg, key);
  const tk = `${room}|${epoch}`;
  topSeen.set(tk, Math.max(topSeen.get(tk) ?? 0, id));
}

// ---------------------------------------------------------------- extended clients
interface RoomView {
  epoch: string;
  /** lowest id this session must see, or undefined until one sets it */
  from: number | undefined;
  ids: Set<number>;
  last70: number;
  members: Set<string>;
  top: number;
}
let seq = 0;

class Ext {
  sock: net.Socket | undefined;
  buf = '';
  name: string;
  token: string | undefined;
  joined = false;
  connecting = false;
  rooms = new Map<string, RoomView>();
  /** rooms this client means to be in (besides the lobby), for rejoining */
  wantRooms = new Set<string>();
  /** last position per room across sessions */
  pos = new Map<string, { epoch: string; id: number }>();
  lastCid: { room: string; cid: string; msg: string } | undefined;
  waiting = new Map<string, (m: Msg) => void>();
  pendingRtt = new Map<number, number>();
  lastUsers: string[] | undefined;
  closedAt = 0;
  gen = 0;
  sinceSent = new Map<string, number>();
  log: string[] = [];
  full: string[] = [];
  constructor(
    readonly id: number,
    name: string,
  ) {
    this.name = name;
  }
  tag(): string {
    return `c${this.id}(${this.name})`;
  }
  note(s: string): void {
    const line = `[${((Date.now() - t0) / 1000).toFixed(2)}] ${s}`;
    this.log.push(line);
    this.full.push(line);
    if (this.log.length > 60) this.log.shift();
  }
  send(o: object): void {
    if (this.sock === undefined || this.sock.destroyed) return;
    const text = JSON.stringify(o);
    this.note(`> ${text.slice(0, 200)}`);
    this.sock.write(`${text}\n`);
  }
  connect(node: Node, fresh: boolean): void {
    this.gen++;
    const gen = this.gen;
    this.connecting = true;
    this.joined = false;
    this.rooms.clear();
    const sock = net.connect({ host: '127.0.0.1', port: node.port, noDelay: true });
    this.sock = sock;
    this.buf = '';
    sock.on('error', () => {});
    sock.on('data', (d: Buffer) => {
      if (gen !== this.gen) return;
      this.buf += d.toString('utf8');
      let i = this.buf.indexOf('\n');
      while (i >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        if (line.trim() !== '') this.onLine(line);
        i = this.buf.indexOf('\n');
      }
    });
    sock.on('close', () => {
      if (gen !== this.gen) return;
      this.note(`closed`);
      this.joined = false;
      this.connecting = false;
      this.closedAt = Date.now();
    });
    const since = [...this.pos.entries()]
      .filter(([room]) => room === 'lobby' || this.wantRooms.has(room))
      .map(([room, p]) => ({ room, epoch: p.epoch, id: p.id }));
    this.sinceSent = new Map(since.map((s) => [s.room, s.id]));
    const connect: Record<string, unknown> = {
      cmd: '0',
      nickname: this.name,
      caps: ['errors', 'renames', 'whispers', 'rooms', 'history'],
    };
    if (!fresh && this.token !== undefined) connect.resume = this.token;
    else this.lastCid = undefined;
    if (since.length > 0) connect.since = since;
    this.note(`connect to node ${node.index} fresh=${fresh}`);
    sock.once('connect', () => this.send(connect));
  }
  onLine(line: string): void {
    let m: Msg;
    try {
      m = JSON.parse(line) as Msg;
    } catch {
      violation(`${this.tag()} got a line that is not JSON: ${line.slice(0, 200)}`);
      return;
    }
    this.note(`< ${line.slice(0, 200)}`);
    const w = this.waiting.get(m.cmd);
    switch (m.cmd) {
      case '03':
        this.joined = true;
        this.connecting = false;
        this.token = m.resume as string;
        this.name = m.nickname as string;
        if (m.resumed !== true) this.rejoin();
        if (this.expectResumed && m.resumed !== true && Date.now() - lastChaos > 8000)
          violation(
            `${this.tag()}: a resume while the old connection was open was not resumed: ${line}\n  ${this.log.slice(-10).join('\n  ')}`,
          );
        this.expectResumed = false;
        break;
      case '01':
      case '02':
        this.connecting = false;
        // name taken: take another on the next reconnect
        this.name = `x${this.id}_${++seq}`;
        this.token = undefined;
        this.lastCid = undefined;
        break;
      case '101': {
        const room = m.room as string;
        const since = this.sinceSent.get(room);
        this.sinceSent.delete(room);
        const view: RoomView = {
          epoch: m.epoch as string,
          from: undefined,
          ids: new Set(),
          last70: 0,
          members: new Set(m.members as string[]),
          top: m.top as number,
        };
        if (m.userCount !== view.members.size)
          violation(`${this.tag()} ${room}: "101" lists ${view.members.size} but counts: ${line}`);
        if (m.recovered === true) {
          if (since === undefined) violation(`${this.tag()} recovered without a since: ${line}`);
          view.from = (since ?? 0) + 1;
        } else view.from = (m.top as number) + 1;
        if (m.recovered === true) {
          const p = this.pos.get(room);
          if (p !== undefined && p.epoch !== view.epoch)
            violation(`${this.tag()} recovered into epoch ${view.epoch} from ${p.epoch}: ${line}`);
        }
        this.rooms.set(room, view);
        if (room !== 'lobby') this.wantRooms.add(room);
        break;
      }
      case '103':
        this.rooms.delete(m.room as string);
        this.wantRooms.delete(m.room as string);
        break;
      case '108': {
        const v = this.rooms.get(m.room as string);
        if (v) {
          if (m.reason === 'epoch') v.epoch = m.epoch as string;
          v.from = undefined;
          v.last70 = 0;
          v.ids.clear();
        }
        break;
      }
      case '70':
      case '71': {
        if (m.cmd === '70' && m.whisper === true) {
          whispersGot.set(m.msg as string, (whispersGot.get(m.msg as string) ?? 0) + 1);
          break;
        }
        const room = m.room as string;
        const v = this.rooms.get(room);
        const id = m.id as number;
        if (v === undefined) {
          violation(`${this.tag()} got ${m.cmd} for room ${room} it is not in: ${line}`);
          break;
        }
        if (m.cmd === '71' && m.duplicate === true) break;
        const msg = m.cmd === '70' ? (m.msg as string) : (pendingCid.get(m.cid as string) ?? '');
        if (msg !== '') record(room, v.epoch, id, msg, this.tag());
        if (m.cmd === '70') {
          if (id <= v.last70)
            violation(`${this.tag()} ${room}: 70 id ${id} after ${v.last70}: ${line}`);
          v.last70 = id;
        }
        if (v.ids.has(id)) violation(`${this.tag()} ${room}: id ${id} twice`);
        v.ids.add(id);
        if (v.from === undefined) v.from = id;
        const p = this.pos.get(room);
        if (p === undefined || p.epoch !== v.epoch || p.id < id) {
          // position = highest contiguous id
          let c = v.from - 1;
          while (v.ids.has(c + 1)) c++;
          if (c >= v.from) this.pos.set(room, { epoch: v.epoch, id: c });
          else if (p === undefined || p.epoch !== v.epoch)
            this.pos.set(room, { epoch: v.epoch, id: v.from - 1 });
        }
        break;
      }
      case '8': {
        const v = this.rooms.get((m.room as string) ?? 'lobby');
        if (v?.members.has(m.nickname as string))
          violation(`${this.tag()}: "8" of a member it was shown already: ${line}`);
        v?.members.add(m.nickname as string);
        if (v !== undefined && m.userCount !== v.members.size)
          violation(`${this.tag()}: "8" counts other than the ${v.members.size} shown: ${line}`);
        break;
      }
      case '30': {
        const v = this.rooms.get((m.room as string) ?? 'lobby');
        v?.members.delete(m.nickname as string);
        if (v !== undefined && m.userCount !== v.members.size)
          violation(`${this.tag()}: "30" counts other than the ${v.members.size} shown: ${line}`);
        break;
      }
      case '91': {
        const v = this.rooms.get((m.room as string) ?? 'lobby');
        if (v) {
          v.members.delete(m.oldNickname as string);
          v.members.add(m.newNickname as string);
        }
        break;
      }
      case '51':
        this.name = m.newNickname as string;
        for (const v of this.rooms.values()) {
          v.members.delete(this.prevName ?? '');
          v.members.add(this.name);
        }
        break;
      case '60':
        this.pendingRtt.delete(m.beginTime as number);
        break;
      case '10':
        this.lastUsers = (m.users as [string][]).map((u) => u[0]);
        break;
      case '90':
        if (![1018, 1017, 1006, 2007, 3001, 3006, 1015, 1016, 1014].includes(m.code as number))
          this.note(`error ${line}`);
        if (![2007, 3001, 3006, 1018, 1017, 1006].includes(m.code as number))
          log(`${this.tag()} error: ${line}`);
        break;
    }
    if (w) {
      this.waiting.delete(m.cmd);
      w(m);
    }
  }
  prevName: string | undefined;
  expectResumed = false;
  rejoin(): void {
    for (const room of this.wantRooms) {
      const p = this.pos.get(room);
      const o: Record<string, unknown> = { cmd: '100', room };
      if (p !== undefined) {
        o.since = { epoch: p.epoch, id: p.id };
        this.sinceSent.set(room, p.id);
      }
      this.send(o);
    }
  }
  act(): void {
    if (!this.joined) return;
    const r = rnd();
    const rooms = [...this.rooms.keys()];
    if (r < 0.35) {
      const room = pick(rooms.length ? rooms : ['lobby']);
      const msg = `m${this.id}.${++seq}`;
      if (rnd() < 0.6) {
        const cid = `c${seq}`;
        pendingCid.set(cid, msg);
        this.lastCid = { room, cid, msg };
        this.send({ cmd: '7', msg, room, cid });
      } else {
        pendingCid.set(`nocid-${seq}`, msg);
        this.send({ cmd: '7', msg, room });
      }
    } else if (r < 0.42) {
      const to = pick(exts).name;
      const msg = `w:${this.id}.${++seq}`;
      this.send({ cmd: '2', to, msg });
    } else if (r < 0.47) {
      this.prevName = this.name;
      this.send({ cmd: '5', newNickname: pick(NAMES) });
    } else if (r < 0.52) {
      this.send({ cmd: '1', room: pick(rooms.length ? rooms : ['lobby']) });
    } else if (r < 0.57) {
      const bt = Date.now() + rnd();
      this.pendingRtt.set(bt, Date.now());
      this.send({ cmd: '6', beginTime: bt });
    } else if (r < 0.67) {
      const room = pick(ROOMS.slice(1));
      if (!this.rooms.has(room)) {
        const p = this.pos.get(room);
        const o: Record<string, unknown> = { cmd: '100', room };
        if (p !== undefined && rnd() < 0.7) {
          o.since = { epoch: p.epoch, id: p.id };
          this.sinceSent.set(room, p.id);
        } else this.sinceSent.delete(room);
        this.send(o);
      }
    } else if (r < 0.74) {
      const room = pick(ROOMS.slice(1));
      if (this.rooms.has(room)) this.send({ cmd: '102', room });
    } else if (r < 0.8) {
      this.send({ cmd: '106', room: pick(rooms.length ? rooms : ['lobby']), limit: 5 });
    } else if (r < 0.86) {
      // abrupt disconnect (or a half-open one left open), resume on a random node,
      // maybe re-send the last chat
      const old = this.sock;
      const takeover = rnd() < 0.5 && Date.now() - lastChaos > 8000;
      if (takeover && old) {
        let text = '';
        old.on('data', (d: Buffer) => {
          text += d.toString();
        });
        const started = Date.now();
        const who = this.tag();
        this.expectResumed = true;
        setTimeout(() => {
          if (!old.destroyed && old.readyState !== 'closed') {
            violation(
              `${who}: the connection a resume took over is still open after ${Date.now() - started} ms; it got ${text.slice(-300)}`,
            );
            old.destroy();
          }
        }, 8000);
      } else {
        old?.destroy();
        this.expectResumed = false;
      }
      this.joined = false;
      const node = pick(nodes.filter((n) => n.up && !n.paused));
      if (node) {
        const last = this.lastCid;
        this.connect(node, false);
        if (last && rnd() < 0.5) {
          const resend = () => {
            if (this.joined) this.send({ cmd: '7', msg: last.msg, room: last.room, cid: last.cid });
          };
          setTimeout(resend, 300);
        }
      }
    } else if (r < 0.88) {
      this.send({ cmd: '3' });
      this.sock?.end();
      this.joined = false;
      this.token = undefined;
      this.lastCid = undefined;
      this.wantRooms.clear();
      this.gen++;
      this.sock = undefined;
      this.closedAt = Date.now();
    } else {
      this.send({ cmd: '104' });
    }
  }
}
type Msg = Record<string, unknown> & { cmd: string };
let lastChaos = 0;
const pendingCid = new Map<string, string>();
const whispersGot = new Map<string, number>();
const exts: Ext[] = [];

// ---------------------------------------------------------------- course clients
function pyDumps(o: Record<string, unknown>): string {
  return `{${Object.entries(o)
    .map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`)
    .join(', ')}}`;
}
const COURSE_FIELDS: Record<string, string[]> = {
  '01': ['cmd'],
  '02': ['cmd'],
  '03': ['cmd', 'serverAddress', 'userCount'],
  '10': ['cmd', 'users'],
  '20': ['cmd'],
  '21': ['cmd'],
  '22': ['cmd'],
  '30': ['cmd', 'nickname', 'userCount'],
  '40': ['cmd', 'serverVersion'],
  '50': ['cmd'],
  '51': ['cmd', 'newNickname'],
  '60': ['cmd', 'beginTime'],
  '70': ['cmd', 'from', 'msg'],
  '8': ['cmd', 'nickname', 'userCount'],
};
class Course {
  sock: net.Socket | undefined;
  buf = Buffer.alloc(0);
  joined = false;
  name: string;
  pendingRtt = new Set<number>();
  gen = 0;
  constructor(readonly id: number) {
    this.name = `course${id}`;
  }
  connect(node: Node): void {
    const gen = ++this.gen;
    this.joined = false;
    const sock = net.connect({ host: '127.0.0.1', port: node.port });
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    sock.on('error', () => {});
    sock.on('data', (d: Buffer) => {
      if (gen !== this.gen) return;
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 1024) {
        const block = this.buf.subarray(0, 1024).toString('utf8');
        this.buf = this.buf.subarray(1024);
        let m: Msg;
        try {
          m = JSON.parse(block) as Msg;
        } catch {
          violation(
            `course${this.id}: a 1024-byte block is not one JSON object: ${block.slice(0, 200)}`,
          );
          continue;
        }
        const want = COURSE_FIELDS[m.cmd];
        const keys = Object.keys(m);
        if (want === undefined || keys.join() !== want.join())
          violation(`course${this.id}: not a course message: ${JSON.stringify(m)}`);
        if (m.cmd === '03') this.joined = true;
        if (m.cmd === '01') this.name = `course${this.id}x${++seq}`;
        if (m.cmd === '60') this.pendingRtt.delete(m.beginTime as number);
        if (m.cmd === '70' && typeof m.msg === 'string' && m.msg.startsWith('w:')) {
          whispersGot.set(m.msg, (whispersGot.get(m.msg) ?? 0) + 1);
        }
      }
    });
    sock.on('close', () => {
      if (gen === this.gen) this.joined = false;
    });
    sock.once('connect', () => sock.write(pyDumps({ cmd: '0', nickname: this.name })));
  }
  act(): void {
    if (!this.joined || !this.sock) return;
    const r = rnd();
    if (r < 0.5) {
      const msg = `k${this.id}.${++seq}`;
      pendingCid.set(`course-${seq}`, msg);
      this.sock.write(pyDumps({ cmd: '7', msg }));
    } else if (r < 0.7) {
      const bt = Date.now() + 0.25;
      this.pendingRtt.add(bt);
      this.sock.write(pyDumps({ cmd: '6', beginTime: bt }));
    } else if (r < 0.85) this.sock.write(pyDumps({ cmd: '1' }));
    else this.sock.write(pyDumps({ cmd: '2', to: pick(exts).name, msg: `w:k${this.id}.${++seq}` }));
  }
}
const courses: Course[] = [];

// ---------------------------------------------------------------- chaos
let chaosRunning = 0;
async function chaos(): Promise<void> {
  chaosRunning++;
  try {
    await chaos1();
  } finally {
    chaosRunning--;
  }
}
async function chaos1(): Promise<void> {
  lastChaos = Date.now();
  const r = rnd();
  const node = pick(nodes);
  if (!node.up || node.paused) return;
  if (r < 0.3) {
    log(`chaos: SIGTERM node ${node.index}, restart`);
    node.expectExit = true;
    killGroup(node.child, 'SIGTERM');
    await new Promise((res) =>
      node.child.exitCode !== null ? res(null) : node.child.once('exit', res),
    );
    const fresh = await startNode(node.index);
    nodes[node.index] = fresh;
  } else if (r < 0.5) {
    log('chaos: CLIENT KILL TYPE pubsub');
    redisCli('CLIENT', 'KILL', 'TYPE', 'pubsub');
  } else {
    const ms = rnd() < 0.5 ? 1000 : (CLUSTER_TIMEOUT + 2) * 1000;
    log(`chaos: SIGSTOP node ${node.index} for ${ms} ms`);
    node.paused = true;
    killGroup(node.child, 'SIGSTOP');
    await sleep(ms);
    killGroup(node.child, 'SIGCONT');
    node.paused = false;
  }
  lastChaos = Date.now();
}

// ---------------------------------------------------------------- checks at quiet
async function quietCheck(round: number): Promise<void> {
  // everyone back
  for (let attempt = 0; attempt < 5; attempt++) {
    for (const c of exts) {
      if (!c.joined && !c.connecting) {
        const node = pick(nodes.filter((n) => n.up));
        c.connect(node, rnd() < 0.2);
      }
    }
    for (const k of courses) {
      if (!k.joined) k.connect(pick(nodes.filter((n) => n.up)));
    }
    await sleep(1500);
  }
  await sleep(3000);
  // RTT from everyone, answered within 8 s
  const stamps = new Map<Ext, number>();
  for (const c of exts) {
    const bt = 1e12 + round * 1000 + c.id + 0.5;
    c.pendingRtt.clear();
    c.pendingRtt.set(bt, Date.now());
    stamps.set(c, bt);
    c.send({ cmd: '6', beginTime: bt });
  }
  for (const k of courses) {
    k.pendingRtt.clear();
    const bt = 2e12 + round * 1000 + k.id + 0.5;
    k.pendingRtt.add(bt);
    k.sock?.write(pyDumps({ cmd: '6', beginTime: bt }));
  }
  await sleep(8000);
  for (const c of exts) {
    if (!c.joined)
      violation(
        `round ${round}: ${c.tag()} not joined at the check\n  ${c.log.slice(-15).join('\n  ')}`,
      );
    else if (c.pendingRtt.size > 0)
      violation(
        `round ${round}: ${c.tag()} RTT unanswered (wedged)\n  ${c.log.slice(-25).join('\n  ')}`,
      );
  }
  for (const k of courses) {
    if (!k.joined) violation(`round ${round}: course${k.id} not joined`);
    else if (k.pendingRtt.size > 0) violation(`round ${round}: course${k.id} RTT unanswered`);
  }
  // USERS from every ext client: same set, equal to the live names
  for (const c of exts) {
    c.lastUsers = undefined;
    c.send({ cmd: '1' });
  }
  await sleep(3000);
  const live = new Set([
    ...exts.filter((c) => c.joined).map((c) => c.name),
    ...courses.filter((k) => k.joined).map((k) => k.name),
  ]);
  const names = exts.filter((c) => c.joined).map((c) => c.name);
  if (new Set(names).size !== names.length)
    violation(`round ${round}: two live clients hold one name: ${names.sort().join(',')}`);
  for (const c of exts) {
    if (!c.joined) continue;
    if (c.lastUsers === undefined) {
      violation(`round ${round}: ${c.tag()} USERS unanswered`);
      continue;
    }
    const got = [...c.lastUsers].sort().join(',');
    const want = [...live].sort().join(',');
    if (got !== want) violation(`round ${round}: ${c.tag()} USERS ${got} != live ${want}`);
    if (new Set(c.lastUsers).size !== c.lastUsers.length)
      violation(`round ${round}: ${c.tag()} USERS has a name twice: ${got}`);
  }
  // room member views against truth
  for (const room of ROOMS) {
    const truth = new Set<string>();
    for (const c of exts) if (c.joined && c.rooms.has(room)) truth.add(c.name);
    if (room === 'lobby') for (const k of courses) if (k.joined) truth.add(k.name);
    for (const c of exts) {
      const v = c.rooms.get(room);
      if (!c.joined || v === undefined) continue;
      const got = [...v.members].sort().join(',');
      const want = [...truth].sort().join(',');
      if (got !== want)
        violation(
          `round ${round}: ${c.tag()} members of ${room}: ${got} != ${want}\n  ${c.log.slice(-12).join('\n  ')}`,
        );
      // no gaps: ids from `from` to the top seen by anyone, in this epoch
      const top = topSeen.get(`${room}|${v.epoch}`) ?? 0;
      if (v.from !== undefined) {
        const missing: number[] = [];
        for (let id = v.from; id <= top; id++) if (!v.ids.has(id)) missing.push(id);
        if (missing.length > 0)
          violation(
            `round ${round}: ${c.tag()} ${room} epoch ${v.epoch}: missing ids ${missing.slice(0, 20).join(',')} (from ${v.from}, top ${top})\n  ${c.log.slice(-20).join('\n  ')}`,
          );
      }
    }
  }
  // each delivered whisper reached at most one client
  for (const [msg, n] of whispersGot) if (n > 1) violation(`whisper ${msg} received ${n} times`);
}

// ---------------------------------------------------------------- main
async function main(): Promise<void> {
  const redis = await startRedis();
  redisPort = redis.port;
  for (let i = 0; i < N_NODES; i++) nodes.push(await startNode(i));
  log(`seed ${seed}, redis ${redisPort}, nodes ${nodes.map((n) => n.port).join(',')}`);
  for (let i = 0; i < N_EXT; i++) exts.push(new Ext(i, NAMES[i]!));
  for (let i = 0; i < N_COURSE; i++) courses.push(new Course(i));
  for (const c of exts) c.connect(pick(nodes), true);
  for (const k of courses) k.connect(pick(nodes));
  await sleep(2000);
  try {
    for (let round = 1; round <= ROUNDS && Date.now() < HARD_DEADLINE; round++) {
      log(`round ${round}`);
      const steps = Number(process.env.CHAOS_STEPS ?? 150);
      const chaosAt = Math.floor(rnd() * steps);
      const chaosAt2 = Math.floor(rnd() * steps);
      for (let s = 0; s < steps && Date.now() < HARD_DEADLINE; s++) {
        const c = pick(exts);
        c.act();
        if (rnd() < 0.2) pick(courses)?.act();
        if ((s === chaosAt || s === chaosAt2) && process.env.CHAOS_NONE === undefined) void chaos();
        for (const x of exts)
          if (
            !x.joined &&
            !x.connecting &&
            x.sock !== undefined &&
            Date.now() - x.closedAt > 700 &&
            rnd() < 0.3
          ) {
            const live = nodes.filter((n) => n.up && !n.paused);
            if (live.length > 0) x.connect(pick(live), false);
          }
        await sleep(20 + rnd() * 30);
      }
      await sleep(2000);
      while (chaosRunning > 0) await sleep(200);
      await quietCheck(round);
    }
  } finally {
    for (const c of exts) c.sock?.destroy();
    for (const k of courses) k.sock?.destroy();
    for (const n of nodes) {
      n.expectExit = true;
      killGroup(n.child, 'SIGCONT');
      killGroup(n.child, 'SIGTERM');
    }
    await sleep(1500);
    for (const n of nodes) killGroup(n.child, 'SIGKILL');
    await redis.stop();
  }
  const dir = `/tmp/confab-chaos-clients-${seed}`;
  mkdirSync(dir, { recursive: true });
  for (const c of exts) writeFileSync(`${dir}/c${c.id}.log`, c.full.join('\n'));
  for (const n of nodes) writeFileSync(`${dir}/node${n.index}.log`, n.out);
  writeFileSync(`${dir}/main.log`, mainLog.join('\n'));
  log(`done: ${violations.length} violation(s), ${stored.size} chats stored`);
  process.exit(violations.length > 0 ? 1 : 0);
}
main().catch((e) => {
  console.error(e);
  for (const c of children) killGroup(c, 'SIGKILL');
  process.exit(2);
});
