import net from 'node:net';
import type { Dialect } from './servers.js';

/**
 * One member connection of the load generator. Incoming bytes are split the
 * dialect's natural way (lines for confab and IRC, a brace scanner for the
 * seed server, which sends no delimiter) and chat payloads are handed on
 * without JSON.parse: the payload is "sender seq micros" in ASCII.
 */
export class Member {
  readonly socket: net.Socket;
  private carry = '';
  private depth = 0;
  private pending: string[] = [];
  joined = false;
  onJoined: (() => void) | undefined;
  onPayload: (payload: string) => void = () => {};

  constructor(
    readonly dialect: Dialect,
    readonly nick: string,
    port: number,
    localAddress: string | undefined,
    private readonly flusher: Flusher,
  ) {
    this.socket = net.connect({ port, host: '127.0.0.1', localAddress, noDelay: true });
    this.socket.setEncoding('latin1');
    this.socket.on('data', (chunk: string) => this.onData(chunk));
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
      this.socket.once('close', () => reject(new Error(`${this.nick}: closed while joining`)));
      const send = () => {
        switch (this.dialect) {
          case 'confab':
            // "caps" (even empty) says this client splits on newlines.
            this.socket.write(`{"cmd":"0","nickname":"${this.nick}","caps":[]}\n`);
            break;
          case 'seed':
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

  /** Queues a chat message; all queued bytes go out in one write per tick. */
  chat(payload: string): void {
    switch (this.dialect) {
      case 'confab':
        this.pending.push(`{"cmd":"7","msg":"${payload}"}\n`);
        break;
      case 'seed':
        this.pending.push(`{"cmd": "7", "msg": "${payload}"}`);
        break;
      case 'irc':
        this.pending.push(`PRIVMSG #bench :${payload}\r\n`);
        break;
    }
    if (this.pending.length === 1) this.flusher.mark(this);
  }

  flush(): void {
    if (this.pending.length === 0) return;
    const data = this.pending.length === 1 ? this.pending[0]! : this.pending.join('');
    this.pending = [];
    this.socket.write(data, 'latin1');
  }

  private onData(chunk: string): void {
    if (this.dialect === 'seed') {
      this.scanBraces(chunk);
      return;
    }
    let text = this.carry === '' ? chunk : this.carry + chunk;
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl < 0) break;
      this.onLine(text, start, nl);
      start = nl + 1;
    }
    this.carry = start === text.length ? '' : text.slice(start);
    text = '';
  }

  private scanBraces(chunk: string): void {
    const text = this.carry + chunk;
    let start = 0;
    let depth = this.depth;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 123) {
        if (depth === 0) start = i;
        depth++;
      } else if (c === 125 && --depth === 0) {
        this.onLine(text, start, i + 1);
        start = i + 1;
      }
    }
    this.depth = depth;
    this.carry = depth === 0 ? '' : text.slice(start);
    if (depth !== 0) this.depth = 0;
  }

  private onLine(text: string, start: number, end: number): void {
    if (this.dialect === 'irc') {
      if (text.startsWith('PING', start)) {
        this.socket.write(`PONG${text.slice(start + 4, end)}\n`);
        return;
      }
      const privmsg = text.indexOf(' PRIVMSG #bench :', start);
      if (privmsg >= 0 && privmsg < end) {
        let stop = end;
        if (text.charCodeAt(stop - 1) === 13) stop--;
        this.onPayload(text.slice(privmsg + 17, stop));
        return;
      }
      if (!this.joined) {
        // Some servers refuse JOIN until registration completes ("001").
        const welcome = text.indexOf(' 001 ', start);
        if (welcome >= 0 && welcome < end) this.socket.write('JOIN #bench\r\n');
        const code = text.indexOf(' 366 ', start);
        if (code >= 0 && code < end) this.markJoined();
        else if (/ 4(33|32|71|73|74|75) /.test(text.slice(start, end))) {
          this.socket.destroy(new Error(`${this.nick}: ${text.slice(start, end)}`));
        }
      }
      return;
    }
    // confab and seed JSON: find "msg" and take the string after it.
    const msg = text.indexOf('"msg":', start);
    if (msg >= 0 && msg < end) {
      const open = text.indexOf('"', msg + 6);
      const close = text.indexOf('"', open + 1);
      this.onPayload(text.slice(open + 1, close));
      return;
    }
    if (!this.joined && text.indexOf('"03"', start) >= 0) this.markJoined();
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
