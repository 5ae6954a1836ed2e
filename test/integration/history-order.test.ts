/**
 * Requests of one session are answered in order, and its events reach the
 * room in that order, whatever the history store makes wait: the same
 * pipelined scripts against a server without history (every request finishes
 * at once) and with memory and SQLite history must look the same to the
 * sender and to a watcher, but for ids, times and epochs.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import { HISTORY_CAPS, line } from '../helpers/history-harness.js';
import { RawClient } from '../helpers/raw-client.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';

const ROOMS = ['den', 'attic', 'lobby'];

let dir: string;
const servers = new Map<string, SpawnedServer>();

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'confab-order-'));
  const stores: [string, string[]][] = [
    ['off', ['--history', 'off']],
    ['memory', ['--history', 'memory']],
    ['sqlite', ['--history', 'sqlite', '--data-dir', dir]],
  ];
  for (const [name, args] of stores) {
    servers.set(name, await spawnServer(['--http-port', 'off', '--rate-limit', '0', ...args]));
  }
});

afterAll(async () => {
  for (const server of servers.values()) await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

type Step =
  | { kind: 'chat'; room?: string; cid?: string }
  | { kind: 'whisper' }
  | { kind: 'rename'; to: number }
  | { kind: 'join'; room: string; since: boolean }
  | { kind: 'part'; room: string }
  | { kind: 'history'; room: string }
  | { kind: 'users'; room: string }
  | { kind: 'version' };

const roomArb = fc.constantFrom(...ROOMS);
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('chat' as const),
      room: fc.option(roomArb, { nil: undefined }),
      cid: fc.option(fc.constantFrom('a', 'b'), { nil: undefined }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'whisper' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('rename' as const), to: fc.nat(2) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('join' as const),
      room: roomArb,
      since: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('part' as const), room: roomArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('history' as const), room: roomArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('users' as const), room: roomArb }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'version' as const }) },
);

/** The script's requests, with names made unique to this run (no history from other runs). */
function requests(steps: Step[], run: string): object[] {
  const room = (r: string) => (r === 'lobby' ? r : `${r}${run}`);
  let n = 0;
  return steps.map((s) => {
    n++;
    switch (s.kind) {
      case 'chat': {
        const chat: Record<string, unknown> = { cmd: '7', msg: `m${n}` };
        if (s.room !== undefined) chat.room = room(s.room);
        // Unique: a repeated cid is a duplicate only where history is kept.
        if (s.cid !== undefined) chat.cid = `${s.cid}${n}`;
        return chat;
      }
      case 'whisper':
        return { cmd: '2', to: `w${run}`, msg: `w${n}` };
      case 'rename':
        return { cmd: '5', newNickname: `s${run}x${s.to}` };
      case 'join':
        return s.since
          ? { cmd: '100', room: room(s.room), since: { epoch: 'e', id: 0 } }
          : { cmd: '100', room: room(s.room) };
      case 'part':
        return { cmd: '102', room: room(s.room) };
      case 'history':
        return { cmd: '106', room: room(s.room) };
      case 'users':
        return { cmd: '1', room: room(s.room) };
      default:
        return { cmd: '4' };
    }
  });
}

/** What must not differ between stores: everything but ids, times, epochs and recovery. */
function shown(m: ParsedServerMessage, run: string): string {
  const {
    id: _i,
    at: _a,
    epoch: _e,
    top: _t,
    recovered: _r,
    reason: _s,
    serverAddress: _sa,
    resume: _re,
    users: _u,
    ...rest
  } = m as unknown as Record<string, unknown>;
  // "107" lists messages with ids; without history there are none: its arrival is what counts.
  if (m.cmd === '107') return '107';
  return JSON.stringify(rest).replaceAll(run, '#');
}

/**
 * Without the history that follows a "101" (ids up to its `top`): a room
 * joined again replays what was said in it, which only a server with history can.
 */
function live(messages: ParsedServerMessage[]): ParsedServerMessage[] {
  const tops = new Map<string, number>();
  return messages.filter((m) => {
    const { room, top, id } = m as unknown as { room?: string; top?: number; id?: number };
    if (m.cmd === '101' && room !== undefined) tops.set(room, top ?? 0);
    return !(
      m.cmd === '70' &&
      room !== undefined &&
      id !== undefined &&
      id <= (tops.get(room) ?? 0)
    );
  });
}

async function open(port: number, nickname: string): Promise<RawClient> {
  const client = await RawClient.open(port);
  client.write(line({ cmd: '0', nickname, caps: HISTORY_CAPS }));
  await client.expect('03');
  await client.expect('101');
  return client;
}

let runs = 0;

async function play(
  server: SpawnedServer,
  steps: Step[],
): Promise<{ sender: string[]; watcher: string[] }> {
  const run = `r${runs++}`;
  const watcher = await open(server.port, `w${run}`);
  for (const r of ROOMS.filter((x) => x !== 'lobby')) {
    watcher.write(line({ cmd: '100', room: `${r}${run}` }));
    await watcher.expect('101');
  }
  const sender = await open(server.port, `s${run}`);
  await watcher.expect('8');
  watcher.drain();
  sender.drain();
  sender.write([...requests(steps, run), { cmd: '3' }].map(line).join(''));
  await sender.expectClose(10_000);
  watcher.write(line({ cmd: '4' }));
  await watcher.expect('40', 10_000);
  watcher.close();
  const show = (ms: ParsedServerMessage[]) => live(ms).map((m) => shown(m, run));
  return { sender: show(sender.drain()), watcher: show(watcher.drain()) };
}

it('answers and publishes a pipelined mix of requests in order with any history store', async () => {
  const scripts = fc.sample(fc.array(stepArb, { minLength: 10, maxLength: 40 }), {
    seed: 1130,
    numRuns: 12,
  });
  for (const steps of scripts) {
    const off = await play(servers.get('off')!, steps);
    for (const store of ['memory', 'sqlite']) {
      const seen = await play(servers.get(store)!, steps);
      expect({ store, steps, ...seen }).toEqual({ store, steps, ...off });
    }
  }
}, 120_000);
