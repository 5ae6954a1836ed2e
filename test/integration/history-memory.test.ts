/**
 * A recovery waits for a slow reader, so what it holds meanwhile must stay
 * small: clients resuming many full rooms without reading must not make the
 * server hold every message they asked for.
 */
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import { describe, expect, it } from 'vitest';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import {
  HISTORY_CAPS,
  HistoryHarness,
  line,
  stalledLobbyResume,
  stalledSocket,
  storeChats,
} from '../helpers/history-harness.js';
import { RawClient } from '../helpers/raw-client.js';

const harness = HistoryHarness.use();

/** The lobby and 19 rooms: the default --max-rooms-per-client. */
const ROOMS = ['lobby', ...Array.from({ length: 19 }, (_, i) => `room${i}`)];
const STORED = 1000;
const MSG = 'x'.repeat(4096);
/** With the filler, the default --max-users (10). */
const RESUMERS = 8;

function memoryMb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)![1]) / 1024;
}

function joinAll(client: RawClient): void {
  client.write(
    ROOMS.slice(1)
      .map((room) => line({ cmd: '100', room }))
      .join(''),
  );
}

describe('resumes of full rooms by clients that do not read', () => {
  it('hold a page of each room, not its whole replay, and still deliver all of it', async () => {
    const server = await harness.serve([
      '--history',
      'sqlite',
      '--data-dir',
      harness.dataDir(),
      '--rate-limit',
      '0',
    ]);
    const pid = server.child.pid!;
    const { client: filler } = await harness.connect(server.port, 'filler');
    joinAll(filler);
    await filler.waitFor((m) => m.cmd === '101', ROOMS.length, 20_000);
    const epochs = new Map(
      filler.received.filter((m) => m.cmd === '101').map((m) => [m.room, m.epoch]),
    );
    let stored = 0;
    for (const room of ROOMS) {
      for (let batch = 0; batch < STORED / 100; batch++) {
        filler.write(line({ cmd: '7', room, msg: MSG }).repeat(100));
        stored += 100;
        await filler.waitFor((m) => m.cmd === '71', stored, 20_000);
      }
    }
    filler.received.length = 0;
    const since = ROOMS.map((room) => ({ room, epoch: epochs.get(room), id: 0 }));

    const before = memoryMb(pid, 'VmRSS');
    const sockets: net.Socket[] = [];
    for (let i = 0; i < RESUMERS; i++) {
      const { client: first, welcome } = await harness.connect(server.port, `r${i}`);
      joinAll(first);
      await first.waitFor((m) => m.cmd === '101', ROOMS.length, 20_000);
      const socket = await stalledSocket(
        server.port,
        line({ cmd: '0', nickname: `r${i}`, caps: HISTORY_CAPS, since, resume: welcome.resume }),
      );
      // Taken over: the resume was read, and its replays are under way.
      await first.expectClose(10_000);
      sockets.push(socket);
    }
    // Each replay reads what it can while nobody reads.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    // The replays asked for are 20 rooms x 1,000 messages x 4 KB each, 80 MB a client.
    expect(memoryMb(pid, 'VmHWM') - before).toBeLessThan(300);

    // One of them reads: every room's messages arrive once, in order.
    const reader = harness.track(RawClient.wrap(sockets[0]!));
    sockets[0]!.resume();
    const ids = (m: ParsedServerMessage, room: string) => m.cmd === '70' && m.room === room;
    const deadline = Date.now() + 60_000;
    const done = () =>
      ROOMS.every((room) => reader.received.some((m) => ids(m, room) && m.id === STORED));
    for (let i = 0; i < 6_000 && Date.now() < deadline && !reader.isClosed && !done(); i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const all = Array.from({ length: STORED }, (_, i) => i + 1);
    for (const room of ROOMS) {
      expect(reader.received.filter((m) => ids(m, room)).map((m) => m.id)).toEqual(all);
    }
    expect(reader.isClosed).toBe(false);
    for (const socket of sockets) socket.destroy();
  }, 180_000);
});

describe('a recovery that retention overtakes while the client reads slowly', () => {
  it('tells the client of the messages deleted before it read them, with a "108"', async () => {
    const server = await harness.serve([
      '--history',
      'memory',
      '--rate-limit',
      '0',
      '--history-max-messages',
      '1000',
    ]);
    const { client: filler } = await harness.connect(server.port, 'filler');
    const lobby = (await filler.expect('101')) as unknown as { epoch: string };
    // About 24 KB a message, 24 MB in all: far more than the queue and the kernel hold.
    const big = '\u0001'.repeat(4096);
    await storeChats(filler, big, STORED);
    const socket = await stalledLobbyResume(server.port, 'slow', lobby.epoch);
    await filler.waitFor((m) => m.cmd === '8' && m.nickname === 'slow', 1, 10_000);
    // Each stored message deletes the oldest: the replay has not got that far yet.
    for (let i = 0; i < 300; i++) {
      filler.write(line({ cmd: '7', msg: `new ${i}` }));
      await filler.expect('71', 10_000);
    }
    const slow = harness.track(RawClient.wrap(socket));
    socket.resume();
    await slow.waitFor((m) => m.cmd === '70' && m.id === STORED + 300, 1, 20_000);
    const seen = slow.received.filter((m) => m.cmd === '70' || m.cmd === '108');
    let last = 0;
    let told = false;
    for (const m of seen) {
      if (m.cmd === '108') {
        expect(m).toMatchObject({ room: 'lobby', epoch: lobby.epoch, reason: 'deleted' });
        told = true;
        continue;
      }
      const id = m.id as number;
      expect(id).toBeGreaterThan(last);
      // A skip is told first.
      if (id > last + 1) expect(told).toBe(true);
      told = false;
      last = id;
    }
    expect(last).toBe(STORED + 300);
    expect(slow.isClosed).toBe(false);
  }, 120_000);
});
