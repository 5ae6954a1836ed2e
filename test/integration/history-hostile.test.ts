/**
 * The history and resume surface attacked from outside: the server as its own
 * process, clients that pipeline, cheat and never read.
 */
import { describe, expect, it } from 'vitest';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import { HISTORY_CAPS, HistoryHarness, line, storeChats } from '../helpers/history-harness.js';
import { RawClient } from '../helpers/raw-client.js';

const harness = HistoryHarness.use();

/** Both stores: what is answered later with one must be answered in order with the other too. */
const STORES: [string, () => string[]][] = [
  ['memory', () => ['--history', 'memory']],
  ['sqlite', () => ['--history', 'sqlite', '--data-dir', harness.dataDir()]],
];

/** Waits until `done` holds for what the client has received, or it closes. */
async function until(client: RawClient, done: (received: ParsedServerMessage[]) => boolean) {
  for (let i = 0; i < 200 && !done(client.received) && !client.isClosed; i++) {
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe.each(STORES)('with %s history', (_name, storeArgs) => {
  it('answers a rate-limited request after the requests before it, not ahead of them', async () => {
    // Default flood control: a burst of 40, then 20 a second.
    const server = await harness.serve(storeArgs());
    const { client } = await harness.connect(server.port, 'pipeliner');
    await client.expect('101');
    client.drain();
    // The JOIN's history replay holds up what follows it; the last RTTs are over the burst.
    let burst = line({ cmd: '100', room: 'physics' }) + line({ cmd: '4' });
    for (let i = 0; i < 45; i++) burst += line({ cmd: '6', beginTime: i });
    client.write(burst);
    await until(client, (r) => r.filter((m) => m.cmd === '60' || m.cmd === '90').length >= 45);
    const replies = client.received.filter((m) => ['101', '40', '60', '90'].includes(m.cmd));
    const order = replies.map((m) => m.cmd);
    expect(order[0]).toBe('101');
    expect(order[1]).toBe('40');
    // Every refusal comes after every answer: the refused requests were the last ones sent.
    expect(order.indexOf('90')).toBeGreaterThan(order.lastIndexOf('60'));
    expect(order.filter((c) => c === '90').length).toBeGreaterThan(0);
  });

  it('delivers the chat of a member cut off for flooding before the room hears that it left', async () => {
    const server = await harness.serve(storeArgs());
    const watcher = await RawClient.open(server.port);
    harness.track(watcher);
    watcher.write(line({ cmd: '0', nickname: 'watcher' }));
    await watcher.expect('03');
    const bob = await RawClient.open(server.port);
    harness.track(bob);
    bob.write(line({ cmd: '0', nickname: 'bob' }));
    await bob.expect('03');
    await watcher.expect('8');
    // The chat is the last request within the burst of 40; what follows strikes out.
    let burst = line({ cmd: '4' }).repeat(39) + line({ cmd: '7', msg: 'last words' });
    burst += line({ cmd: '4' }).repeat(45);
    bob.write(burst);
    await until(watcher, (r) => r.some((m) => m.cmd === '30'));
    await new Promise((r) => setTimeout(r, 200));
    // As the course server (and confab without history) tells it: the chat, then the leave.
    expect(watcher.received.map((m) => m.cmd)).toEqual(['70', '30']);
  });

  // The winner holds the token's sender, so the loser's spent token names nobody.
  it('stores a new chat of the loser of a race for one resume token, however its cid', async () => {
    const server = await harness.serve([...storeArgs(), '--rate-limit', '0']);
    const { client: watcher } = await harness.connect(server.port, 'watcher');
    await watcher.expect('101');
    const { client: ann, welcome } = await harness.connect(server.port, 'ann');
    await ann.expect('101');
    // Two connections present ann's token at once: one takes the session back.
    const racers = [
      harness.track(await RawClient.open(server.port)),
      harness.track(await RawClient.open(server.port)),
    ];
    racers.forEach((c, i) => {
      c.write(
        line({ cmd: '0', nickname: `racer${i}`, caps: HISTORY_CAPS, resume: welcome.resume }),
      );
    });
    const welcomes = await Promise.all(racers.map((c) => c.expect('03')));
    expect(welcomes.map((w) => w.resumed).sort()).toEqual([false, true]);
    const winner = racers[welcomes.findIndex((w) => w.resumed === true)]!;
    const loser = racers[welcomes.findIndex((w) => w.resumed !== true)]!;
    // Each sends a chat of its own, never sent before, under a cid of its own counter.
    winner.write(line({ cmd: '7', msg: 'from the winner', cid: '1' }));
    expect(await winner.expect('71')).not.toHaveProperty('duplicate');
    loser.write(line({ cmd: '7', msg: 'from the loser', cid: '1' }));
    expect(await loser.expect('71')).not.toHaveProperty('duplicate');
    await until(watcher, (r) => r.filter((m) => m.cmd === '70').length >= 2);
    const chats = watcher.received.filter((m) => m.cmd === '70').map((m) => m.msg);
    expect(chats).toEqual(['from the winner', 'from the loser']);
  });

  it('sends history that escapes large in pages the client can take, never cutting it off', async () => {
    const server = await harness.serve([...storeArgs(), '--rate-limit', '0']);
    const { client: filler } = await harness.connect(server.port, 'filler');
    const lobby = (await filler.expect('101')) as unknown as { epoch: string };
    // Control characters go out as \u0001: 4,000 of them take 24 KB in each "70".
    const msg = '\u0001'.repeat(4000);
    await storeChats(filler, msg, 150);
    const { client: pager } = await harness.connect(server.port, 'pager');
    await pager.expect('101');
    pager.write(line({ cmd: '106', room: 'lobby', limit: 100 }));
    const page = (await pager.expect('107', 10_000)) as unknown as {
      messages: unknown[];
      more: boolean;
    };
    expect(page.messages.length).toBeGreaterThan(0);
    expect(page.more).toBe(true);
    // 150 messages, 3.6 MB: a resume that wrote them all at once would be cut
    // off, forever; paced, every one arrives.
    const { client: resumer } = await harness.connect(server.port, 'resumer', {
      since: [{ room: 'lobby', epoch: lobby.epoch, id: 0 }],
    });
    expect(await resumer.expect('101')).toMatchObject({ recovered: true, top: 150 });
    await resumer.waitFor((m) => m.cmd === '70', 150);
    const ids = resumer.received.filter((m) => m.cmd === '70').map((m) => m.id);
    expect(ids).toEqual(Array.from({ length: 150 }, (_, i) => i + 1));
    for (const client of [pager, resumer]) {
      client.write(line({ cmd: '4' }));
      await client.expect('40', 10_000);
      expect(client.isClosed).toBe(false);
    }
  });
});
