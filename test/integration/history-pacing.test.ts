/**
 * History the client asked for is sent at the client's pace: a resume on a
 * slow link is waited for, never cut off as a slow consumer, and the live
 * messages held behind the replay still arrive exactly once, in order.
 */
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import { OVER_TOTAL } from '../../src/transports/backlogs.js';
import {
  HISTORY_CAPS,
  HistoryHarness,
  line,
  stalledLobbyResume,
  stalledSocket,
  storeChats,
} from '../helpers/history-harness.js';
import { addTeacher } from '../helpers/operator-server.js';
import { join, RawClient } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';
import { spawnServer } from '../helpers/spawn-server.js';

const harness = HistoryHarness.use();

const REPLAY = 1000;
const LIVE = 20;
/** --max-message characters, each escaped to six bytes (\u0001): about 24 KB a "70", 24 MB in all. */
const BIG = '\u0001'.repeat(4096);

/** Fills the lobby with REPLAY maximum-size messages; resolves with the filler and the epoch. */
async function fill(port: number) {
  const { client: filler } = await harness.connect(port, 'filler');
  const lobby = (await filler.expect('101')) as unknown as { epoch: string };
  await storeChats(filler, BIG, REPLAY);
  return { filler, epoch: lobby.epoch };
}

/** Live messages while the resumer is not reading, each stored (its "71") before the next. */
async function live(filler: RawClient): Promise<void> {
  for (let i = 0; i < LIVE; i++) {
    filler.write(line({ cmd: '7', msg: `live ${i}` }));
    await filler.expect('71', 10_000);
  }
}

/** Ids of the lobby's chat in the order they arrived. */
function chatIds(received: readonly ParsedServerMessage[]): unknown[] {
  return received.filter((m) => m.cmd === '70' && m.room === 'lobby').map((m) => m.id);
}

const ALL = Array.from({ length: REPLAY + LIVE }, (_, i) => i + 1);

describe('a full replay to a client that does not read', () => {
  it('waits for a TCP client, then sends every message and the live ones after it exactly once', async () => {
    const server = await harness.serve(['--history', 'memory', '--rate-limit', '0']);
    const { filler, epoch } = await fill(server.port);

    // Connected and asking for everything, but reading nothing until told to.
    const socket = await stalledLobbyResume(server.port, 'resumer', epoch);
    // In the lobby (the others are told) before the live messages, which must come after the
    // replay, not into it. The replay cannot fit: 24 MB against a 1 MiB queue and the kernel's
    // buffers.
    await filler.waitFor((m) => m.cmd === '8' && m.nickname === 'resumer', 1, 10_000);
    await live(filler);
    const resumer = harness.track(RawClient.wrap(socket));
    socket.resume();

    expect(await resumer.expect('101', 10_000)).toMatchObject({
      room: 'lobby',
      recovered: true,
      top: REPLAY,
    });
    await resumer.waitFor((m) => m.cmd === '70' && m.id === REPLAY + LIVE, 1, 60_000);
    expect(chatIds(resumer.received)).toEqual(ALL);
    // Still connected: an RTT is answered.
    resumer.write(line({ cmd: '6', beginTime: 1 }));
    await resumer.expect('60', 10_000);
    expect(resumer.isClosed).toBe(false);
  }, 120_000);

  it('waits for a WebSocket client the same way', async () => {
    const server = await spawnServer(['--history', 'memory', '--rate-limit', '0']);
    try {
      const { filler, epoch } = await fill(server.port);
      const received: ParsedServerMessage[] = [];
      const ws = new WebSocket(`ws://127.0.0.1:${server.httpPort}/ws`);
      ws.on('message', (data) => received.push(JSON.parse(String(data)) as ParsedServerMessage));
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
      let isClosed = false;
      void closed.then(() => {
        isClosed = true;
      });
      ws.pause();
      ws.send(
        JSON.stringify({
          cmd: '0',
          nickname: 'webresumer',
          caps: HISTORY_CAPS,
          since: [{ room: 'lobby', epoch, id: 0 }],
        }),
      );
      await filler.waitFor((m) => m.cmd === '8' && m.nickname === 'webresumer', 1, 10_000);
      await live(filler);
      ws.resume();
      const deadline = Date.now() + 60_000;
      while (chatIds(received).length < ALL.length && !isClosed && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(isClosed).toBe(false);
      expect(received.find((m) => m.cmd === '101')).toMatchObject({ recovered: true, top: REPLAY });
      expect(chatIds(received)).toEqual(ALL);
      ws.close();
      await closed;
    } finally {
      await server.stop();
    }
  }, 120_000);
});

describe('HISTORY pages asked for back to back by a client that does not read', () => {
  it('are each sent once the client has read the ones before, never cutting it off', async () => {
    const server = await harness.serve(['--history', 'memory', '--rate-limit', '0']);
    const { filler } = await fill(server.port);
    filler.close();
    // Twenty pages of about 256 KB each, 5 MB in all, asked for at once.
    let requests = line({ cmd: '0', nickname: 'pager', caps: HISTORY_CAPS });
    for (let i = 0; i < 20; i++) requests += line({ cmd: '106', room: 'lobby', limit: 100 });
    requests += line({ cmd: '4' });
    const socket = await stalledSocket(server.port, requests);
    const pager = harness.track(RawClient.wrap(socket));
    // Let the server get as far as it can while nothing is read.
    await new Promise((resolve) => setTimeout(resolve, 300));
    socket.resume();
    await pager.expect('40', 30_000);
    expect(pager.received.filter((m) => m.cmd === '107')).toHaveLength(20);
    expect(pager.isClosed).toBe(false);
  }, 120_000);
});

describe('a client that reads nothing while its history waits', () => {
  it('is closed as too slow after --stall-timeout, and the others go on', async () => {
    const server = await harness.serve([
      '--history',
      'memory',
      '--rate-limit',
      '0',
      '--stall-timeout',
      '1',
    ]);
    const { filler, epoch } = await fill(server.port);
    // Never reads: the replay it asked for would hold its messages for as long as it stays.
    const socket = await stalledLobbyResume(server.port, 'sleeper', epoch);
    await filler.waitFor((m) => m.cmd === '8' && m.nickname === 'sleeper', 1, 10_000);
    await filler.waitFor((m) => m.cmd === '30' && m.nickname === 'sleeper', 1, 30_000);
    filler.write(line({ cmd: '7', msg: 'still here' }));
    expect(await filler.expect('71', 10_000)).toMatchObject({ id: REPLAY + 1 });
    socket.destroy();
  }, 120_000);
});

describe('a member removed while its history waits for it to read', () => {
  it('is heard leaving at once, before a newcomer takes its nickname, over TCP and WebSocket', async () => {
    const server = await startConfab({
      'rate-limit': '0',
      'shutdown-timeout': '30',
      'http-port': '0',
    });
    try {
      addTeacher(server);
      const port = server.address.port;
      const { client: filler } = await harness.connect(port, 'filler');
      await filler.expect('101');
      await storeChats(filler, BIG, 50);
      const watcher = await join(port, 'watcher');
      const op = await join(port, 'op', { caps: ['errors', 'moderation'] });
      op.write(line({ cmd: '92', name: 'teacher', password: 'sesame' }));
      await op.expect('93');
      const pages = Array.from({ length: 40 }, () => ({ cmd: '106', room: 'lobby', limit: 100 }));
      // Each asks for 40 pages of about 256 KB and reads nothing: its pages wait for it.
      const tcp = await stalledSocket(
        port,
        [{ cmd: '0', nickname: 'sleeper', caps: HISTORY_CAPS }, ...pages].map(line).join(''),
      );
      const ws = new WebSocket(`ws://127.0.0.1:${server.httpAddress!.port}/ws`);
      await new Promise((resolve) => ws.once('open', resolve));
      ws.send(JSON.stringify({ cmd: '0', nickname: 'dozer', caps: HISTORY_CAPS }));
      for (const page of pages) ws.send(JSON.stringify(page));
      (ws as unknown as { _socket: { pause(): void } })._socket.pause();
      for (const nickname of ['sleeper', 'dozer']) {
        await watcher.waitFor((m) => m.cmd === '8' && m.nickname === nickname, 1, 10_000);
        // Time for its pages to fill what the kernel buffers, so the rest wait for it.
        await new Promise((r) => setTimeout(r, 500));
        op.write(line({ cmd: '94', nickname }));
        await op.waitFor((m) => m.cmd === '99' && m.nickname === nickname, 1, 10_000);
        // The nickname is free now, and someone else takes it.
        const again = await join(port, nickname);
        await watcher.waitFor((m) => m.cmd === '8' && m.nickname === nickname, 2, 10_000);
        const order = watcher.received
          .filter((m) => (m.cmd === '8' || m.cmd === '30') && m.nickname === nickname)
          .map((m) => m.cmd);
        expect(order, nickname).toEqual(['8', '30', '8']);
        again.close();
      }
      tcp.destroy();
      ws.terminate();
      for (const c of [filler, watcher, op]) c.close();
    } finally {
      await server.stop();
    }
  }, 60_000);
});

describe('live events held behind replays that nobody reads', () => {
  it('count in --max-queue-total: the stalled are closed, a reader gets every chat', async () => {
    // Each sleeper may hold 8 MB of live events behind its replay on its own; the three
    // together may hold no more than the total, 1 MiB, with the little their queues hold.
    const server = await harness.serve([
      '--history',
      'memory',
      '--rate-limit',
      '0',
      '--max-queue',
      '131072',
      '--max-queue-total',
      '1048576',
    ]);
    const { filler, epoch } = await fill(server.port);
    const { client: reader } = await harness.connect(server.port, 'reader');
    const sleepers = [];
    for (const nickname of ['sleeper1', 'sleeper2', 'sleeper3']) {
      sleepers.push(await stalledLobbyResume(server.port, nickname, epoch));
      await filler.waitFor((m) => m.cmd === '8' && m.nickname === nickname, 1, 10_000);
    }
    // Some 16 KB held for each sleeper a chat, 2 MB each in all: past the total for one alone.
    const chats = 120;
    for (let i = 0; i < chats; i++) {
      filler.write(line({ cmd: '7', msg: `${i} ${BIG.slice(8)}` }));
      await filler.expect('71', 10_000);
    }
    for (const nickname of ['sleeper1', 'sleeper2', 'sleeper3'])
      await filler.waitFor((m) => m.cmd === '30' && m.nickname === nickname, 1, 10_000);
    expect(server.output()).toContain(OVER_TOTAL);
    await reader.waitFor((m) => m.cmd === '70' && m.id === REPLAY + chats, 1, 20_000);
    const live = reader.received.filter((m) => m.cmd === '70' && Number(m.id) > REPLAY);
    expect(live.map((m) => m.id)).toEqual(Array.from({ length: chats }, (_, i) => REPLAY + i + 1));
    reader.write(line({ cmd: '6', beginTime: 1 }));
    await reader.expect('60', 10_000);
    for (const socket of sleepers) socket.destroy();
  }, 120_000);
});
