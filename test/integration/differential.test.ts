import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import type { ConfabServer } from '../../src/server.js';
import { RawClient } from '../helpers/raw-client.js';
import { type SeedServer, startConfab, startSeed, withoutSeed } from '../helpers/servers.js';

/**
 * The same scripted sessions run against the course's own Python server and
 * against confab; every client must receive the same messages, addresses and
 * ports aside. The seed server reads one recv() per request and reads a second
 * request in the same segment as garbage, so the script never sends a request
 * before the previous one has visibly been handled: each step names the
 * messages that prove it was, then every client round-trips a VERSION as a
 * barrier to catch anything else that was sent.
 */

type Step =
  | { who: string; connect: string; wait: [string, string][]; closes?: boolean }
  | { who: string; send: Record<string, unknown>; wait: [string, string][]; closes?: boolean };

const MAX_USERS = 3;

const SCRIPT: Step[] = [
  { who: 'A', connect: 'ann', wait: [['A', '03']] },
  {
    who: 'B',
    connect: 'bob',
    wait: [
      ['B', '03'],
      ['A', '8'],
    ],
  },
  {
    who: 'C',
    connect: 'cat',
    wait: [
      ['C', '03'],
      ['A', '8'],
      ['B', '8'],
    ],
  },
  { who: 'X', connect: 'dan', wait: [['X', '02']], closes: true },
  { who: 'Y', connect: 'ann', wait: [['Y', '01']], closes: true },
  { who: 'A', send: { cmd: '1' }, wait: [['A', '10']] },
  {
    who: 'A',
    send: { cmd: '7', msg: 'hello, 여러분 {"x": 1}' },
    wait: [
      ['B', '70'],
      ['C', '70'],
    ],
  },
  {
    who: 'A',
    send: { cmd: '7', msg: '' },
    wait: [
      ['B', '70'],
      ['C', '70'],
    ],
  },
  { who: 'B', send: { cmd: '2', to: 'ann', msg: 'psst' }, wait: [['B', '22']] },
  { who: 'B', send: { cmd: '2', to: 'zed', msg: 'psst' }, wait: [['B', '20']] },
  { who: 'B', send: { cmd: '2', to: 'bob', msg: 'psst' }, wait: [['B', '21']] },
  { who: 'C', send: { cmd: '4' }, wait: [['C', '40']] },
  { who: 'C', send: { cmd: '5', newNickname: 'ann' }, wait: [['C', '50']] },
  { who: 'C', send: { cmd: '5', newNickname: 'cat' }, wait: [['C', '50']] },
  { who: 'B', send: { cmd: '5', newNickname: 'bea' }, wait: [['B', '51']] },
  { who: 'A', send: { cmd: '1' }, wait: [['A', '10']] },
  { who: 'A', send: { cmd: '6', beginTime: 1590314400123.4568 }, wait: [['A', '60']] },
  { who: 'C', send: { cmd: '2', to: 'bea', msg: 'hi' }, wait: [['C', '22']] },
  {
    who: 'C',
    send: { cmd: '7', msg: 'Honestly I HATE PROFESSORS' },
    wait: [
      ['A', '30'],
      ['B', '30'],
    ],
    closes: true,
  },
  {
    who: 'D',
    connect: 'dan',
    wait: [
      ['D', '03'],
      ['A', '8'],
      ['B', '8'],
    ],
  },
  {
    who: 'D',
    send: { cmd: '2', to: 'ann', msg: 'i hate professor' },
    wait: [
      ['A', '30'],
      ['B', '30'],
    ],
    closes: true,
  },
  { who: 'B', send: { cmd: '3' }, wait: [['A', '30']], closes: true },
  { who: 'A', send: { cmd: '1' }, wait: [['A', '10']] },
  { who: 'A', send: { cmd: '3' }, wait: [], closes: true },
];

type Transcript = Record<string, unknown[]>;

/** Replaces ports (which differ run to run) with the name of the client that owns them. */
function normalise(message: ParsedServerMessage, ports: Map<number, string>): unknown {
  const copy: Record<string, unknown> = { ...message };
  if (Array.isArray(copy.serverAddress)) copy.serverAddress = [copy.serverAddress[0], 'PORT'];
  if (Array.isArray(copy.users)) {
    copy.users = (copy.users as [string, string, number][]).map(([n, ip, p]) => [
      n,
      ip,
      ports.get(p) ?? '?',
    ]);
  }
  return copy;
}

async function run(port: number): Promise<Transcript> {
  const clients = new Map<string, RawClient>();
  const ports = new Map<number, string>();
  const transcript: Transcript = {};
  const record = (who: string, messages: ParsedServerMessage[]) => {
    transcript[who] ??= [];
    transcript[who].push(...messages.map((m) => normalise(m, ports)));
  };
  try {
    for (const [index, step] of SCRIPT.entries()) {
      const label = `step ${index} (${step.who})`;
      let actor = clients.get(step.who);
      if ('connect' in step) {
        actor = await RawClient.open(port);
        clients.set(step.who, actor);
        ports.set(actor.socket.localPort!, step.who);
        actor.sendPy({ cmd: '0', nickname: step.connect });
      } else {
        if (actor === undefined) throw new Error(`${label}: no client`);
        actor.sendPy(step.send);
      }
      for (const [who, cmd] of step.wait) {
        const c = clients.get(who)!;
        const got = await c.expect(cmd).catch((err: Error) => {
          throw new Error(`${label}: ${who} waiting for ${cmd}: ${err.message}`);
        });
        record(who, [got]);
      }
      if (step.closes) {
        await actor.expectClose();
        record(step.who, actor.drain());
        clients.delete(step.who);
      }
      // Barrier: each remaining client's VERSION is answered after anything
      // the step caused was written to it.
      for (const [who, c] of clients) {
        c.sendPy({ cmd: '4' });
        const pending = c.drain();
        await c.expect('40');
        record(who, [...pending, ...c.drain()]);
      }
    }
  } finally {
    for (const c of clients.values()) c.close();
  }
  return transcript;
}

describe.skipIf(withoutSeed())('differential: confab vs the course server', () => {
  let seed: SeedServer;
  let confab: ConfabServer;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'confab-differential-'));
    [seed, confab] = await Promise.all([
      startSeed(MAX_USERS),
      // The default product: every chat stored in SQLite before it is delivered.
      startConfab({
        'max-users': String(MAX_USERS),
        history: 'sqlite',
        'data-dir': dataDir,
      }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([seed?.stop(), confab?.stop()]);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('gives every client the same messages for the same script', async () => {
    const expected = await run(seed.port);
    const actual = await run(confab.address.port);
    // Sanity: the script exercised every course reply code.
    const codes = new Set(
      Object.values(expected).flatMap((ms) => ms.map((m) => (m as { cmd: string }).cmd)),
    );
    expect([...codes].sort()).toEqual(
      ['01', '02', '03', '10', '20', '21', '22', '30', '40', '50', '51', '60', '70', '8'].sort(),
    );
    expect(actual).toEqual(expected);
  }, 60_000);
});
