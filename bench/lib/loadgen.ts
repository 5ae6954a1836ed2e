import net from 'node:net';
import type { Dialect } from './servers.js';

/** One reusable read buffer for every connection: reads are handled one at a time. */
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024);
const LF = 10;
const SPACE = 32;
const OPEN = 123;
const CLOSE = 125;
/**
 * What precedes a chat payload, one marker per dialect so each line costs the
 * same two searches (its end, its payload) whatever the server.
 */
const MSG_KEY = Buffer.from('"msg":"');
const SEED_MSG_KEY = Buffer.from('"msg": "');
const PRIVMSG = Buffer.from(' PRIVMSG #bench :');
const NUMERIC = /^:\S+ (\d{3}) /;
/** Nickname in use or erroneous, channel full, invite-only, banned, bad key. */
const REFUSALS = new Set(['432', '433', '471', '473', '474', '475']);

/**
 * Finds `marker` in buf[from, end). A byte loop: for a short line it costs a
 * third of Buffer#indexOf with a buffer needle, whose call overhead dominates.
 */
function findMarker(buf: Buffer, from: number, end: number, marker: Buffer): number {
  const first = marker[0]!;
  const last = end - marker.length;
  outer: for (let i = from; i <= last; i++) {
    if (buf[i] !== first) continue;
    for (let k = 1; k < marker.length; k++) if (buf[i + k] !== marker[k]) continue outer;
    return i;
  }
  return -1;
}

/** Parses "sender seq micros ..." starting at `at`; returns false if it is not a payload. */
function readPayload(
  buf: Buffer,
  at: number,
  end: number,
  out: Int32Array,
  ts: Float64Array,
): boolean {
  let field = 0;
  let value = 0;
  for (let i = at; i < end && field < 3; i++) {
    const c = buf[i]!;
    if (c === SPACE) {
      if (field < 2) out[field] = value;
      else ts[0] = value;
      field++;
      value = 0;
    } else if (c >= 48 && c <= 57) {
      value = value * 10 + (c - 48);
    } else {
      return false;
    }
  }
  return field === 3;
}

/**
 * One member connection of the load generator. Bytes are read with `onread`
 * into one shared buffer (no allocation per read) and split the dialect's
 * natural way: lines for confab and IRC, a brace scanner for the seed server,
 * which sends no delimiter. Chat payloads ("sender seq micros pad") are parsed
 * straight from the bytes.
 */
export class Member {
  readonly socket: net.Socket;
  /** Bytes of an unfinished line or object, carried to the next read. */
  private carry: Buffer | undefined;
  private pending: string[] = [];
  joined = false;
  /** Why the server turned this member away, when it did. */
  private refusal: string | undefined;
  onJoined: (() => void) | undefined;
  /** `micros` is the send time carried in the payload, `readAt` when its read began (both µs). */
  onPayload: (sender: number, seq: number, micros: number, readAt: number) => void = () => {};
  /** One clock reading per read: every line in it arrived at the same moment. */
  private readAt = 0;
  private readonly marker: Buffer;
  private readonly fields = new Int32Array(2);
  private readonly objects: boolean;
  private readonly micros = new Float64Array(1);
  private cidCount = 0;

  constructor(
    readonly dialect: Dialect,
    readonly nick: string,
    port: number,
    localAddress: string | undefined,
    private readonly flusher: Flusher,
    /** Write each message as it is made, as a chat client does, instead of once per turn. */
    private readonly eachOnItsOwn = false,
    /**
     * A room to live in instead of the shared one (W-rooms): confab members
     * negotiate `rooms`, stay out of the lobby and JOIN_ROOM it; IRC members
     * JOIN #<room>. Only for the confab and IRC dialects.
     */
    readonly room?: string,
    /** confab only: negotiate "history" and give every chat a cid (see Workload.cids). */
    private readonly cids = false,
  ) {
    this.marker =
      dialect === 'irc'
        ? room === undefined
          ? PRIVMSG
          : Buffer.from(` PRIVMSG #${room} :`)
        : dialect === 'seed'
          ? SEED_MSG_KEY
          : MSG_KEY;
    // Course clients' replies carry no newline (the seed's) or trailing padding (confab's).
    this.objects = dialect === 'seed' || dialect === 'course';
    this.socket = net.connect({
      port,
      host: '127.0.0.1',
      localAddress,
      noDelay: true,
      onread: {
        buffer: READ_BUFFER,
        callback: (n: number, buf: Uint8Array) => this.onRead(buf as Buffer, n),
      },
    });
    this.socket.on('error', () => {});
  }

  /** Sends registration; resolves once the server says we are in the room. */
  join(): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.nick}: join timed out`)), 30_000);
      this.onJoined = () => {
        clearTimeout(timer);
        resolve();
      };
      this.socket.once('close', () =>
        reject(new Error(this.refusal ?? `${this.nick}: closed while joining`)),
      );
      const send = () => {
        switch (this.dialect) {
          case 'confab': {
            // "caps" (even empty) says this client splits on newlines; "history" comes
            // only with "rooms".
            const caps = this.cids ? '"rooms","history"' : this.room === undefined ? '' : '"rooms"';
            this.socket.write(
              this.room === undefined
                ? `{"cmd":"0","nickname":"${this.nick}","caps":[${caps}]}\n`
                : `{"cmd":"0","nickname":"${this.nick}","caps":[${caps}],"lobby":false}\n`,
            );
            break;
          }
          case 'seed':
          case 'course':
            this.socket.write(`{"cmd": "0", "nickname": "${this.nick}"}`);
            break;
          case 'irc':
            this.socket.write(`NICK ${this.nick}\r\nUSER ${this.nick} 0 * :${this.nick}\r\n`);
            break;
        }
      };
      if (this.socket.connecting) this.socket.once('connect', send);
      else send();
    });
  }

  /**
   * Sends a chat message: by default queued, all queued bytes going out in
   * one write per tick; with eachOnItsOwn, written at once.
   */
  chat(payload: string): void {
    let line: string;
    switch (this.dialect) {
      case 'confab': {
        const cid = this.cids ? `,"cid":"${++this.cidCount}"` : '';
        line =
          this.room === undefined
            ? `{"cmd":"7","msg":"${payload}"${cid}}\n`
            : `{"cmd":"7","msg":"${payload}","room":"${this.room}"${cid}}\n`;
        break;
      }
      case 'seed':
      case 'course':
        line = `{"cmd": "7", "msg": "${payload}"}`;
        break;
      case 'irc':
        line = `PRIVMSG #${this.room ?? 'bench'} :${payload}\r\n`;
        break;
    }
    if (this.eachOnItsOwn) {
      this.socket.write(line, 'latin1');
      return;
    }
    this.pending.push(line);
    if (this.pending.length === 1) this.flusher.mark(this);
  }

  flush(): void {
    if (this.pending.length === 0) return;
    const data = this.pending.length === 1 ? this.pending[0]! : this.pending.join('');
    this.pending = [];
    this.socket.write(data, 'latin1');
  }

  private onRead(buffer: Buffer, n: number): boolean {
    this.readAt = performance.now() * 1000;
    let buf = buffer;
    let end = n;
    if (this.carry !== undefined) {
      buf = Buffer.concat([this.carry, buffer.subarray(0, n)]);
      end = buf.length;
      this.carry = undefined;
    }
    const consumed = this.objects ? this.scanObjects(buf, end) : this.scanLines(buf, end);
    if (consumed < end) this.carry = Buffer.from(buf.subarray(consumed, end));
    return true;
  }

  private scanLines(buf: Buffer, end: number): number {
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(LF, start);
      if (nl < 0 || nl >= end) return start;
      this.onUnit(buf, start, nl);
      start = nl + 1;
    }
  }

  private scanObjects(buf: Buffer, end: number): number {
    // Bench payloads hold no braces or quotes, so depth counting suffices;
    // padding between objects is skipped.
    let depth = 0;
    let start = 0;
    for (let i = 0; i < end; i++) {
      const c = buf[i]!;
      if (c === OPEN) {
        if (depth++ === 0) start = i;
      } else if (c === CLOSE && --depth === 0) {
        this.onUnit(buf, start, i + 1);
        start = i + 1;
      }
    }
    return depth === 0 ? end : start;
  }

  private onUnit(buf: Buffer, start: number, end: number): void {
    const at = findMarker(buf, start, end, this.marker);
    if (at >= 0) {
      this.deliver(buf, at + this.marker.length, end);
      return;
    }
    if (this.dialect === 'irc') this.onControlLine(buf.toString('latin1', start, end));
    else if (!this.joined) this.onConfabControl(buf.toString('latin1', start, end));
  }

  /** Before joining: "03" is the room for a lobby member; a room member asks for its room then. */
  private onConfabControl(line: string): void {
    if (this.room === undefined) {
      if (line.includes('"03"')) this.markJoined();
    } else if (line.includes('"03"')) {
      this.socket.write(`{"cmd":"100","room":"${this.room}"}\n`);
    } else if (line.includes('"101"')) {
      this.markJoined();
    } else if (line.includes('"90"') || line.includes('"02"') || line.includes('"01"')) {
      this.refuse(line);
    }
  }

  private refuse(line: string): void {
    this.refusal = `${this.nick}: ${line}`;
    this.socket.destroy();
  }

  private deliver(buf: Buffer, at: number, end: number): void {
    if (readPayload(buf, at, end, this.fields, this.micros)) {
      this.onPayload(this.fields[0]!, this.fields[1]!, this.micros[0]!, this.readAt);
    }
  }

  private onControlLine(line: string): void {
    if (line.startsWith('PING')) {
      this.socket.write(`PONG${line.slice(4)}\n`);
      return;
    }
    if (this.joined) return;
    // The numeric in the command position only: in ":srv 266 m5 433 433 :Current
    // global users: 433" the user counts are no refusal (433) nor end of names (366).
    const numeric = NUMERIC.exec(line)?.[1];
    // Some servers refuse JOIN until registration completes ("001").
    if (numeric === '001') this.socket.write(`JOIN #${this.room ?? 'bench'}\r\n`);
    else if (numeric === '366') this.markJoined();
    else if (numeric !== undefined && REFUSALS.has(numeric)) this.refuse(line);
  }

  private markJoined(): void {
    this.joined = true;
    this.onJoined?.();
  }
}

/** Writes every member's queued messages once per event-loop turn. */
export class Flusher {
  private dirty: Member[] = [];
  private scheduled = false;

  mark(member: Member): void {
    this.dirty.push(member);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.scheduled = false;
    const dirty = this.dirty;
    this.dirty = [];
    for (const m of dirty) m.flush();
  }
}
