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
 * Everything here fails soft: the file is a convenience, and a file that cannot be read,
 * is garbage, too large or no regular file (a FIFO would block a plain read) reads as empty.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ServerAddress } from '../client/index.js';
import { nicknameKey } from '../core/nickname.js';
import { readCappedSync } from '../read-capped.js';

/** Entries kept, the newest by save time: one a server and nickname, so few are ever needed. */
export const MAX_SAVED_SESSIONS = 50;
/** Well above what MAX_SAVED_SESSIONS entries within the field limits below take. */
export const MAX_FILE_BYTES = 256 * 1024;
/** Longer server lists are keyed by their hash, so an entry stays small. */
const MAX_SERVER_KEY = 512;
/** Tokens are opaque (docs/protocol.md); today's are far shorter, and a longer one is no token we saved. */
const MAX_TOKEN = 512;
/** A nickname (32 characters) folds to at most 18 characters each (see src/core/nickname.ts). */
const MAX_NICKNAME_KEY = 32 * 18;

export interface SavedSession {
  /** serverKey(): which server (or cluster) the token is for. */
  server: string;
  /** nicknameKey() of the session's nickname: the server's own notion of "the same name". */
  nickname: string;
  token: string;
  /** The client that holds the session; its token is presented only once it is gone. */
  pid: number;
  /** When saved (ms since the epoch): the oldest go first past MAX_SAVED_SESSIONS. */
  at: number;
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
export function serverKey(servers: readonly ServerAddress[], tls: boolean): string {
  const nodes = servers
    .map(({ host, port }) => `${host.toLowerCase().replace(/\.$/, '')}:${port}`)
    .sort();
  const key = `${tls ? 'tls' : 'tcp'}://${[...new Set(nodes)].join(',')}`;
  return key.length <= MAX_SERVER_KEY
    ? key
    : `sha256:${createHash('sha256').update(key).digest('hex')}`;
}

/** Names the server takes for one (case, look-alikes) find one saved session. */
export function sessionNickname(nickname: string): string {
  return nicknameKey(nickname);
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
    typeof e.at === 'number' &&
    Number.isFinite(e.at)
  );
}

/** The newest MAX_SAVED_SESSIONS, newest first, one per server and nickname. */
function newest(entries: readonly SavedSession[]): SavedSession[] {
  const seen = new Set<string>();
  const kept: SavedSession[] = [];
  for (const e of [...entries].sort((a, b) => b.at - a.at)) {
    const key = `${e.server}\n${e.nickname}`;
    if (seen.has(key)) continue;
    seen.add(key);
    kept.push({ server: e.server, nickname: e.nickname, token: e.token, pid: e.pid, at: e.at });
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
    // Opened without blocking and checked to be a regular file before any read (a FIFO
    // put there would otherwise hold the client at start), and read to a cap.
    return parseSessions(readCappedSync(file, MAX_FILE_BYTES, true).toString('utf8'));
  } catch {
    return [];
  }
}

/**
 * Replaces the file with `entries`: a temporary file beside it, then a rename, so a reader
 * (another client) or a crash mid-write never sees half a file. The directory is made 0700
 * and the file 0600: the tokens take sessions over. Throws what failed.
 */
export function writeSessions(file: string, entries: readonly SavedSession[]): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
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
 * The token saved for this server and nickname, if the client that saved it is gone;
 * undefined otherwise (none saved, or its client still runs: its session is its own).
 */
export function savedToken(
  file: string,
  server: string,
  nickname: string,
  alive: (pid: number) => boolean = processAlive,
): string | undefined {
  const key = sessionNickname(nickname);
  const entry = readSessions(file).find((e) => e.server === server && e.nickname === key);
  return entry === undefined || alive(entry.pid) ? undefined : entry.token;
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
): void {
  const key = sessionNickname(nickname);
  const others = readSessions(file).filter(
    (e) => e.server !== server || (e.nickname !== key && e.pid !== pid),
  );
  writeSessions(file, [{ server, nickname: key, token, pid, at: Date.now() }, ...others]);
}

/** Removes this process's entry for `server`, when it has one (a deliberate quit). */
export function forgetSession(file: string, server: string, pid = process.pid): void {
  const entries = readSessions(file);
  const kept = entries.filter((e) => e.server !== server || e.pid !== pid);
  if (kept.length !== entries.length) writeSessions(file, kept);
}
