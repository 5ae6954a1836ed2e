/**
 * The terminal client's resume tokens on disk (docs/security.md, "Saved session tokens").
 *
 * A connection that dies without the server noticing (laptop sleep, a Wi-Fi change) keeps
 * the nickname on the server for minutes. A client started again knew no token and was told
 * its own nickname was taken; with the token it had last, its CONNECT takes the dead session
 * back. So each running client keeps its latest token here, with its PID: a token is only
 * presented once the process that saved it is gone, so two clients on one machine never take
 * each other's live session.
 *
 * With the token go the rooms the session was in and the last message seen in each: when the
 * session itself has ended by the next start (the connection closed with the client, or the
 * server restarted), the new one joins them again and is given what it missed.
 *
 * Everything here fails soft: the file is a convenience, and a file that cannot be read,
 * is garbage, too large or no regular file (a FIFO would block a plain read) reads as empty.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ServerAddress } from '../client/index.js';
import { nicknameKey } from '../core/nickname.js';
import { readCappedSync } from '../read-capped.js';

/** Entries kept, the newest by save time: one a server and nickname, so few are ever needed. */
export const MAX_SAVED_SESSIONS = 50;
/** Above what MAX_SAVED_SESSIONS entries of MAX_ENTRY_BYTES take, with the file's indentation. */
export const MAX_FILE_BYTES = 512 * 1024;
/** Longer server lists are keyed by their hash, so an entry stays small. */
const MAX_SERVER_KEY = 512;
/** Tokens are opaque (docs/protocol.md); today's are far shorter, and a longer one is no token we saved. */
const MAX_TOKEN = 512;
/** A nickname (32 characters) folds to at most 18 characters each (see src/core/nickname.ts). */
const MAX_NICKNAME_KEY = 32 * 18;
/** A host name is at most 255 characters, a boot id 36. */
const MAX_HOST = 255;
/** As many rooms as a CONNECT's `since` takes back; the lobby is never saved. */
export const MAX_SAVED_ROOMS = 20;
/** Room names are at most 64 characters (each up to 2 UTF-16 units); a longer one is no room to join. */
const MAX_ROOM = 256;
/** Epochs are opaque; today's are far shorter. */
const MAX_EPOCH = 128;
/**
 * An entry's bytes in the file at most (rooms it cannot hold are left out, last first): the
 * MAX_SAVED_SESSIONS entries then stay under MAX_FILE_BYTES, so no server, whatever its
 * rooms, tokens or names hold (a control character takes six bytes as JSON), makes the file
 * too large to read back and every other server's token with it.
 */
export const MAX_ENTRY_BYTES = 8 * 1024;

/** This machine and this boot of it (see SavedSession). */
export function thisMachine(): { host: string; boot: string } {
  let boot = '';
  try {
    boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim().slice(0, MAX_HOST);
  } catch {
    // Not Linux: the host name alone, and the PID.
  }
  return { host: os.hostname().slice(0, MAX_HOST), boot };
}

/** A room the session was in, with the last message its client had there, when it had one. */
export interface SavedRoom {
  room: string;
  epoch?: string;
  id?: number;
}

export interface SavedSession {
  /** serverKey(): which server (or cluster) the token is for. */
  server: string;
  /** nicknameKey() of the session's nickname: the server's own notion of "the same name". */
  nickname: string;
  token: string;
  /** The client that holds the session; its token is presented only once it is gone. */
  pid: number;
  /**
   * The machine it runs on (its host name), and that machine's boot (Linux's boot id, or
   * ''): a PID says nothing of a process on another machine sharing this home directory
   * (NFS, a container's mount), and nothing after a reboot.
   */
  host: string;
  boot: string;
  /** When saved (ms since the epoch): the oldest go first past MAX_SAVED_SESSIONS. */
  at: number;
  /**
   * The rooms it was in besides the lobby: when the session itself has ended (its client
   * killed, its connection closed, the server restarted), a new start joins them again.
   */
  rooms?: SavedRoom[];
}

/** `$XDG_STATE_HOME/confab/sessions.json`, by default under `~/.local/state`. */
export function sessionFile(env: NodeJS.ProcessEnv): string {
  // The XDG spec says a relative value is to be ignored: it would move with the working directory.
  const state = env.XDG_STATE_HOME;
  const base =
    state !== undefined && path.isAbsolute(state)
      ? state
      : path.join(env.HOME || os.homedir(), '.local', 'state');
  return path.join(base, 'confab', 'sessions.json');
}

/**
 * One server or cluster, as a token is good for: a cluster takes a session back on any node,
 * so the order its nodes were listed in does not matter; host names are compared as DNS does
 * (letter case and a trailing dot aside). TLS or not is part of it, so a plain-text client
 * never sends a token saved over TLS to what may be another listener.
 */
export function serverKey(
  servers: readonly ServerAddress[],
  tls: boolean,
  servername?: string,
): string {
  const nodes = servers
    .map(({ host, port }) => `${host.toLowerCase().replace(/\.$/, '')}:${port}`)
    .sort();
  // Services behind one address told apart by the name TLS asks for are not one server.
  const name = tls && servername !== undefined ? `#${servername.toLowerCase()}` : '';
  const key = `${tls ? 'tls' : 'tcp'}://${[...new Set(nodes)].join(',')}${name}`;
  return key.length <= MAX_SERVER_KEY
    ? key
    : `sha256:${createHash('sha256').update(key).digest('hex')}`;
}

function isRoom(value: unknown): value is SavedRoom {
  if (typeof value !== 'object' || value === null) return false;
  const r = value as Record<string, unknown>;
  const positioned =
    typeof r.epoch === 'string' &&
    r.epoch.length > 0 &&
    r.epoch.length <= MAX_EPOCH &&
    Number.isSafeInteger(r.id) &&
    (r.id as number) >= 0;
  const bare = r.epoch === undefined && r.id === undefined;
  return (
    typeof r.room === 'string' &&
    r.room.length > 0 &&
    r.room.length <= MAX_ROOM &&
    (positioned || bare)
  );
}

/** The entry's rooms cut, last first, until it fits MAX_ENTRY_BYTES; undefined when it cannot. */
function fitted(entry: SavedSession): SavedSession | undefined {
  const rooms = [...(entry.rooms ?? [])];
  for (;;) {
    const e: SavedSession = { ...entry };
    delete e.rooms;
    if (rooms.length > 0) e.rooms = rooms;
    if (Buffer.byteLength(JSON.stringify(e, null, 1)) <= MAX_ENTRY_BYTES) return e;
    if (rooms.length === 0) return undefined;
    rooms.pop();
  }
}

/** Only the fields a room keeps, whatever else the object held. */
function savedRoom({ room, epoch, id }: SavedRoom): SavedRoom {
  return epoch === undefined || id === undefined ? { room } : { room, epoch, id };
}

function isEntry(value: unknown): value is SavedSession {
  if (typeof value !== 'object' || value === null) return false;
  const e = value as Record<string, unknown>;
  return (
    typeof e.server === 'string' &&
    e.server.length > 0 &&
    e.server.length <= MAX_SERVER_KEY + 16 &&
    typeof e.nickname === 'string' &&
    e.nickname.length > 0 &&
    e.nickname.length <= MAX_NICKNAME_KEY &&
    typeof e.token === 'string' &&
    e.token.length > 0 &&
    e.token.length <= MAX_TOKEN &&
    // 0 or a negative PID would make kill(pid, 0) ask about a process group.
    Number.isSafeInteger(e.pid) &&
    (e.pid as number) > 0 &&
    typeof e.host === 'string' &&
    e.host.length <= MAX_HOST &&
    typeof e.boot === 'string' &&
    e.boot.length <= MAX_HOST &&
    typeof e.at === 'number' &&
    Number.isFinite(e.at)
  );
}

/** An entry's rooms as read: what is not a well-formed room is dropped, never the entry. */
function roomsOf(value: unknown): SavedRoom[] {
  if (!Array.isArray(value)) return [];
  return value
    .slice(0, MAX_SAVED_ROOMS * 4)
    .filter(isRoom)
    .slice(0, MAX_SAVED_ROOMS)
    .map(savedRoom);
}

/** The newest MAX_SAVED_SESSIONS, newest first, one per server and nickname. */
function newest(entries: readonly SavedSession[]): SavedSession[] {
  const seen = new Set<string>();
  const kept: SavedSession[] = [];
  for (const e of [...entries].sort((a, b) => b.at - a.at)) {
    const key = `${e.server}\n${e.nickname}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const { server, nickname, token, pid, host, boot, at } = e;
    const entry: SavedSession = { server, nickname, token, pid, host, boot, at };
    const rooms = roomsOf(e.rooms);
    if (rooms.length > 0) entry.rooms = rooms;
    const fits = fitted(entry);
    if (fits === undefined) continue;
    kept.push(fits);
    if (kept.length === MAX_SAVED_SESSIONS) break;
  }
  return kept;
}

/** The file's text as entries: whatever is not a well-formed entry is dropped, never thrown. */
export function parseSessions(text: string): SavedSession[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return [];
  }
  const list =
    typeof data === 'object' && data !== null ? (data as { sessions?: unknown }).sessions : [];
  if (!Array.isArray(list)) return [];
  // Only so many are looked at: a file within the byte cap still could list many tiny ones.
  return newest(list.slice(0, MAX_SAVED_SESSIONS * 4).filter(isEntry));
}

export function formatSessions(entries: readonly SavedSession[]): string {
  return `${JSON.stringify({ version: 1, sessions: newest(entries) }, null, 1)}\n`;
}

/** What the file holds; empty when it is missing, unreadable, too large or not a regular file. */
export function readSessions(file: string): SavedSession[] {
  try {
    // Entries someone else could have put there are no tokens of ours to present.
    if (!trusted(path.dirname(file)) || !ours(lstatSync(file).uid)) return [];
    // Opened without blocking and checked to be a regular file before any read (a FIFO
    // put there would otherwise hold the client at start), and read to a cap.
    return parseSessions(readCappedSync(file, MAX_FILE_BYTES, true).toString('utf8'));
  } catch {
    return [];
  }
}

/**
 * Replaces the file with `entries`: a temporary file beside it, then a rename, so a reader
 * (another client) or a crash mid-write never sees half a file. The file is 0600, in the
 * directory `locked` made private: the tokens take sessions over. Throws what failed.
 */
function writeSessions(file: string, entries: readonly SavedSession[]): void {
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    // 'wx': a name nobody else may have made meanwhile, and never through a symlink put there.
    writeFileSync(temp, formatSessions(entries), { mode: 0o600, flag: 'wx' });
    renameSync(temp, file);
  } catch (err) {
    try {
      unlinkSync(temp);
    } catch {
      // Never made, or already renamed.
    }
    throw err;
  }
}

/** Whether a file of `uid` is this user's (always, where there are no uids). */
function ours(uid: number): boolean {
  return process.getuid === undefined || uid === process.getuid();
}

/** Whether `dir` is this user's and nobody else may write into it. */
function trusted(dir: string): boolean {
  const st = statSync(dir);
  return (
    st.isDirectory() && ours(st.uid) && (process.getuid === undefined || (st.mode & 0o022) === 0)
  );
}

/**
 * Makes `dir` (0700) if it is not there, and makes an existing one of this user's 0700 too:
 * made by hand with loose permissions, others could remove the file or plant one. Throws
 * when it is someone else's.
 */
function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  if (!st.isDirectory() || !ours(st.uid)) throw new Error(`${dir} is not your own directory`);
  if (process.getuid !== undefined && (st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

/** Waits `ms` without the event loop: only while another client holds the file's lock. */
function pause(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** A lock older than this was left by a client that died holding it. */
const STALE_LOCK_MS = 2_000;

/**
 * Runs `change` (a read, then a write of the file) while holding `<file>.lock`, so that two
 * clients saving, or one saving while another forgets, never write back what the other just
 * changed. Waits at most about half a second for the lock; then goes on without it.
 */
function locked(file: string, change: () => void): void {
  privateDir(path.dirname(file));
  const lock = `${file}.lock`;
  let fd: number | undefined;
  for (let attempt = 0; attempt < 50 && fd === undefined; attempt++) {
    try {
      fd = openSync(lock, 'wx', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') break;
      try {
        if (Date.now() - lstatSync(lock).mtimeMs > STALE_LOCK_MS) unlinkSync(lock);
      } catch {
        // Gone meanwhile: try again.
      }
      pause(10);
    }
  }
  try {
    change();
  } finally {
    if (fd !== undefined) {
      closeSync(fd);
      try {
        unlinkSync(lock);
      } catch {
        // Removed as stale by another client: nothing to undo.
      }
    }
  }
}

/** Whether process `pid` is running (EPERM: it is, as another user's). */
export function processAlive(pid: number): boolean {
  // A PID reused by this very process belonged to a client that is gone.
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * The entry saved for this server and nickname (its token, and the rooms its session was in),
 * if the client that saved it is gone; undefined otherwise (none saved, or its client still
 * runs: its session is its own).
 */
export function savedEntry(
  file: string,
  server: string,
  nickname: string,
  alive: (pid: number) => boolean = processAlive,
  machine = thisMachine(),
): SavedSession | undefined {
  const key = nicknameKey(nickname);
  const entry = readSessions(file).find((e) => e.server === server && e.nickname === key);
  // Saved on another machine: whether its client still runs cannot be told from here.
  if (entry === undefined || entry.host !== machine.host) return undefined;
  // Saved before this machine last started: its client is gone, whatever has its PID now.
  if (entry.boot !== machine.boot && entry.boot !== '' && machine.boot !== '') return entry;
  return alive(entry.pid) ? undefined : entry;
}

/**
 * Saves `token` as this process's session on `server` under `nickname`. This process's own
 * earlier entry for the server goes (a rename keys the session anew), as does any other for
 * the same name (a dead client's, whose session this one took back or replaced).
 */
export function saveSession(
  file: string,
  server: string,
  nickname: string,
  token: string,
  pid = process.pid,
  rooms: readonly SavedRoom[] = [],
): void {
  const key = nicknameKey(nickname);
  const entry: SavedSession = {
    server,
    nickname: key,
    token,
    pid,
    ...thisMachine(),
    at: Date.now(),
  };
  // Rooms past what a file entry holds are the least of it: the session's token still counts.
  const kept = roomsOf(rooms);
  if (kept.length > 0) entry.rooms = kept;
  // What reading would drop (a server's 300 KB token) must not push the others out.
  const fits = isEntry(entry) ? fitted(entry) : undefined;
  if (fits === undefined) throw new Error('the server gave a token too long to keep');
  locked(file, () => {
    const others = readSessions(file).filter(
      (e) => e.server !== server || (e.nickname !== key && e.pid !== pid),
    );
    writeSessions(file, [fits, ...others]);
  });
}

/** Removes this process's entry for `server`, when it has one (a deliberate quit). */
export function forgetSession(file: string, server: string, pid = process.pid): void {
  locked(file, () => {
    const entries = readSessions(file);
    const kept = entries.filter((e) => e.server !== server || e.pid !== pid);
    if (kept.length !== entries.length) writeSessions(file, kept);
  });
}
