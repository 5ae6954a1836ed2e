import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach } from 'vitest';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import { RawClient } from './raw-client.js';
import { type SpawnedServer, spawnServer } from './spawn-server.js';

/** What a client asks for to get rooms, history and resume. */
export const HISTORY_CAPS = ['errors', 'renames', 'rooms', 'history'];

/** One request as a JSON line. */
export function line(value: object): string {
  return `${JSON.stringify(value)}\n`;
}

/**
 * `count` chats of `msg` (to `room`, or the lobby), written 50 at a time, each batch
 * stored (its "71"s) before the next.
 */
export async function storeChats(
  client: RawClient,
  msg: string,
  count: number,
  room?: string,
): Promise<void> {
  for (let batch = 0; batch < count / 50; batch++) {
    client.write(line({ cmd: '7', msg, ...(room ? { room } : {}) }).repeat(50));
    for (let i = 0; i < 50; i++) await client.expect('71', 20_000);
  }
}

/**
 * A connection that reads nothing (until resumed), having sent `requests`: what a client on a
 * stalled link looks like to the server.
 */
export async function stalledSocket(port: number, requests: string): Promise<net.Socket> {
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
    s.once('error', reject);
  });
  socket.on('error', () => {});
  socket.pause();
  socket.write(requests);
  return socket;
}

/** A client that resumes the lobby from its first message (in `epoch`) and reads nothing. */
export function stalledLobbyResume(
  port: number,
  nickname: string,
  epoch: string,
): Promise<net.Socket> {
  return stalledSocket(
    port,
    line({ cmd: '0', nickname, caps: HISTORY_CAPS, since: [{ room: 'lobby', epoch, id: 0 }] }),
  );
}

/**
 * The servers, clients and data directories of a test file's history tests:
 * servers and clients end after each test, directories after the file.
 */
export class HistoryHarness {
  private readonly dirs: string[] = [];
  private readonly servers: SpawnedServer[] = [];
  private readonly clients: RawClient[] = [];

  /** Registers the clean-up with vitest; call at the top of a test file. */
  static use(): HistoryHarness {
    const harness = new HistoryHarness();
    afterEach(async () => {
      for (const c of harness.clients.splice(0)) c.close();
      for (const s of harness.servers.splice(0)) await s.stop();
    });
    afterAll(() => {
      for (const d of harness.dirs) rmSync(d, { recursive: true, force: true });
    });
    return harness;
  }

  dataDir(): string {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'confab-history-'));
    this.dirs.push(dir);
    return dir;
  }

  /** `confab serve` as its own process, without the HTTP listener. */
  async serve(args: string[]): Promise<SpawnedServer> {
    const server = await spawnServer(['--http-port', 'off', ...args]);
    this.servers.push(server);
    return server;
  }

  /** Stops a server before the test ends (a restart). */
  async stop(server: SpawnedServer): Promise<void> {
    await server.stop();
    this.servers.splice(this.servers.indexOf(server), 1);
  }

  /** Closes the client when the test ends. */
  track<T extends RawClient>(client: T): T {
    this.clients.push(client);
    return client;
  }

  /** CONNECT with history; resolves with the client and its "03". */
  async connect(
    port: number,
    nickname: string,
    extra: object = {},
  ): Promise<{ client: RawClient; welcome: ParsedServerMessage }> {
    const client = this.track(await RawClient.open(port));
    client.write(line({ cmd: '0', nickname, caps: HISTORY_CAPS, ...extra }));
    const welcome = await client.expect('03');
    return { client, welcome };
  }
}
