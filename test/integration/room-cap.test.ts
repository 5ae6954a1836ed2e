import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster } from '../helpers/cluster.js';
import { join, type RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';
import { wsClient } from '../helpers/ws-client.js';

const ROOMS = ['errors', 'rooms'];
/** --max-rooms; one place goes to the declared room, so joins can make the rest. */
const CAP = 5;
const MADE = CAP - 1;
let server: SpawnedServer;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'confab-roomcap-'));
  const config = path.join(dir, 'confab.yaml');
  writeFileSync(config, 'rooms:\n  - {name: declared, capacity: 50}\n');
  server = await spawnServer([
    '--config',
    config,
    '--max-users',
    '100',
    '--max-rooms',
    String(CAP),
    '--rate-limit',
    '0',
  ]);
});
afterAll(async () => {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

function line(value: object): string {
  return `${JSON.stringify(value)}\n`;
}

/** The answer each client got to its JOIN_ROOM, once VERSION (sent after it) is answered. */
function joinAnswers(clients: RawClient[], rooms: (i: number) => string) {
  clients.forEach((c, i) => {
    c.write(line({ cmd: '100', room: rooms(i) }));
    c.write(line({ cmd: '4' }));
  });
  return Promise.all(
    clients.map(async (c) => {
      await c.expect('40');
      return c.drain().find((m) => m.cmd === '101' || (m.cmd === '90' && m.ref === '100'))!;
    }),
  );
}

async function roomNames(client: RawClient): Promise<string[]> {
  client.write(line({ cmd: '104' }));
  const list = await client.expect('105');
  return (list.rooms as { room: string }[]).map((r) => r.room);
}

describe('--max-rooms over real sockets', () => {
  it('lets exactly the cap exist when many clients race to make rooms, and frees emptied places', async () => {
    const clients = await Promise.all(
      Array.from({ length: 30 }, (_, i) => join(server.port, `maker${i}`, { caps: ROOMS })),
    );
    const watcher = clients[0]!;
    for (let round = 0; round < 3; round++) {
      const answers = await joinAnswers(clients, (i) => `r${round}x${i}`);
      const made = clients.filter((_, i) => answers[i]!.cmd === '101');
      expect(made).toHaveLength(MADE);
      const refused = answers.filter((m) => m.cmd === '90');
      expect(refused).toHaveLength(clients.length - MADE);
      for (const m of refused) expect(m.code).toBe(1019);
      const names = await roomNames(watcher);
      expect(names[0]).toBe('lobby');
      // The lobby is not counted; the declared room is.
      expect(names).toHaveLength(1 + CAP);
      expect(names).toContain('declared');

      // A room that exists can still be joined at the cap.
      const late = clients.find((c) => !made.includes(c))!;
      const existing = answers.find((m) => m.cmd === '101')!.room as string;
      const [joined] = await joinAnswers([late], () => existing);
      expect(joined).toMatchObject({ cmd: '101', room: existing });

      // Emptied rooms go, and their places with them: half by PART, half by disconnecting.
      const leavers = [...made, late];
      for (const c of leavers) {
        const room = c === late ? existing : (answers[clients.indexOf(c)]!.room as string);
        c.write(line({ cmd: '102', room }));
        if (c === late) await c.expect('103');
      }
      for (const c of made) await c.expect('103');
      expect(await roomNames(watcher)).toEqual(['lobby', 'declared']);
    }
    // Disconnecting empties a room as well.
    const [owner] = await joinAnswers([clients[1]!], () => 'short-lived');
    expect(owner!.cmd).toBe('101');
    clients[1]!.close();
    const others = clients.slice(2, 2 + CAP);
    for (let i = 0; i < 50; i++) {
      if (!(await roomNames(watcher)).includes('short-lived')) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const answers = await joinAnswers(others, (i) => `after${i}`);
    expect(answers.filter((m) => m.cmd === '101')).toHaveLength(MADE);
    for (const c of clients) c.close();
  });

  it('refuses a WebSocket client a new room past the cap with 1019', async () => {
    const holders = await Promise.all(
      Array.from({ length: MADE }, (_, i) => join(server.port, `holder${i}`, { caps: ROOMS })),
    );
    const answers = await joinAnswers(holders, (i) => `held${i}`);
    expect(answers.every((m) => m.cmd === '101')).toBe(true);
    const web = await wsClient(server.httpPort!);
    web.send({ cmd: '0', nickname: 'webby', caps: ROOMS });
    await web.expect('03');
    web.send({ cmd: '100', room: 'one-too-many' });
    expect(await web.expect('90')).toMatchObject({ code: 1019, ref: '100' });
    web.send({ cmd: '100', room: 'held0' });
    expect(await web.expect('101')).toMatchObject({ room: 'held0' });
    web.ws.close();
    for (const c of holders) c.close();
  });
});

describe.skipIf(withoutRedis())('--max-rooms on a cluster node', () => {
  it('caps the rooms with members on each node, racing joins included, not cluster-wide', async () => {
    const cluster = await startCluster(2, ['--max-rooms', '3', '--max-users', '100']);
    try {
      const [a, b] = cluster.nodes;
      const onA = await Promise.all(
        Array.from({ length: 12 }, (_, i) => join(a!.port, `a${i}`, { caps: ROOMS })),
      );
      const onB = await Promise.all(
        Array.from({ length: 4 }, (_, i) => join(b!.port, `b${i}`, { caps: ROOMS })),
      );
      for (let round = 0; round < 2; round++) {
        const answers = await joinAnswers(onA, (i) => `a${round}r${i}`);
        const made = onA.filter((_, i) => answers[i]!.cmd === '101');
        expect(made).toHaveLength(3);
        for (const m of answers.filter((m) => m.cmd === '90')) expect(m.code).toBe(1019);
        // Node B has places of its own; a room that exists on A only is new to B.
        const first = answers.find((m) => m.cmd === '101')!.room as string;
        const onBAnswers = await joinAnswers(onB, (i) => (i === 0 ? first : `b${round}r${i}`));
        expect(onBAnswers.map((m) => m.cmd)).toEqual(['101', '101', '101', '90']);
        expect(onBAnswers[3]).toMatchObject({ code: 1019 });
        // Emptied, on both nodes: the places come back for the next round.
        for (const [clients, said] of [
          [onA, answers],
          [onB, onBAnswers],
        ] as const) {
          const inside = clients.filter((_, i) => said[i]!.cmd === '101');
          for (const c of inside)
            c.write(line({ cmd: '102', room: said[clients.indexOf(c)]!.room }));
          for (const c of inside) await c.expect('103');
        }
      }
      for (const c of [...onA, ...onB]) c.close();
    } finally {
      await cluster.stop();
    }
  });
});
