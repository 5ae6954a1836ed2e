/**
 * A recovery under way into a room whose messages the memory store's budget
 * (--history-memory-max) drops before the client has read them: the client
 * must be told (a "108" deleted) rather than left with a silent hole.
 */
import { describe, expect, it } from 'vitest';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import {
  HistoryHarness,
  line,
  stalledLobbyResume,
  storeChats,
} from '../helpers/history-harness.js';
import { RawClient } from '../helpers/raw-client.js';

const harness = HistoryHarness.use();

const REPLAY = 1000;
/** --max-message characters, each escaped to six bytes (\u0001): about 24 KB a "70", 24 MB in all. */
const BIG = '\u0001'.repeat(4096);
/** About 8 KB a message against the budget: the lobby's 1,000 fit, 2,000 more do not. */
const BUDGET = 10 * 1024 * 1024;

describe('a memory-history recovery whose rest is evicted while the client is not reading', () => {
  it('tells the client what it will not get instead of skipping it silently', async () => {
    const server = await harness.serve([
      '--history',
      'memory',
      '--history-memory-max',
      String(BUDGET),
      '--rate-limit',
      '0',
    ]);
    const { client: filler } = await harness.connect(server.port, 'filler');
    const lobby = (await filler.expect('101')) as unknown as { epoch: string };
    await storeChats(filler, BIG, REPLAY);

    const socket = await stalledLobbyResume(server.port, 'resumer', lobby.epoch);
    await filler.waitFor((m) => m.cmd === '8' && m.nickname === 'resumer', 1, 10_000);
    // Other rooms as full written since: all three are cut down to one size, the lobby
    // losing its oldest messages, the ones the stalled recovery has yet to read.
    for (const room of ['a', 'b']) {
      filler.write(line({ cmd: '100', room }));
      await filler.waitFor((m) => m.cmd === '101' && m.room === room, 1, 10_000);
      await storeChats(filler, BIG, REPLAY, room);
    }
    // One live chat in the lobby after it: id REPLAY + 1.
    filler.write(line({ cmd: '7', msg: 'live' }));
    await filler.expect('71', 10_000);

    const resumer = harness.track(RawClient.wrap(socket));
    socket.resume();
    expect(await resumer.expect('101', 10_000)).toMatchObject({ recovered: true, top: REPLAY });
    await resumer.waitFor((m) => m.cmd === '70' && m.id === REPLAY + 1, 1, 60_000);
    const lobbyEvents = resumer.received.filter(
      (m: ParsedServerMessage) => (m.cmd === '70' || m.cmd === '108') && m.room === 'lobby',
    );
    // Every id the client gets is the one after the last, unless a "108" came between.
    let last = 0;
    let told = false;
    for (const m of lobbyEvents) {
      if (m.cmd === '108') {
        told = true;
        continue;
      }
      if (!told) expect(m.id).toBe(last + 1);
      last = m.id as number;
      told = false;
    }
    // The budget did take messages the recovery had yet to read, and the client was told.
    expect(lobbyEvents.some((m) => m.cmd === '108')).toBe(true);
    expect(lobbyEvents.filter((m) => m.cmd === '70').length).toBeLessThan(REPLAY);
  }, 180_000);
});

describe('--history-max-rooms with --history memory', () => {
  it('empties the room written to least recently once more rooms hold messages', async () => {
    const server = await harness.serve(['--history', 'memory', '--history-max-rooms', '2']);
    const { client } = await harness.connect(server.port, 'walker');
    await client.expect('101');
    for (const room of ['a', 'b', 'c']) {
      client.write(line({ cmd: '100', room }));
      await client.waitFor((m) => m.cmd === '101' && m.room === room, 1, 10_000);
      for (let i = 0; i < 2; i++) {
        client.write(line({ cmd: '7', room, msg: `in ${room}` }));
        await client.expect('71', 10_000);
      }
    }
    // The lobby holds none; of a, b and c, a was written to least recently.
    const kept: Record<string, unknown[]> = {};
    for (const room of ['a', 'b', 'c']) {
      client.write(line({ cmd: '106', room }));
      const page = await client.waitFor((m) => m.cmd === '107' && m.room === room, 1, 10_000);
      kept[room] = (page as unknown as { messages: unknown[] }).messages;
    }
    expect(kept.a).toEqual([]);
    expect(kept.b).toHaveLength(2);
    expect(kept.c).toHaveLength(2);
  }, 60_000);
});
