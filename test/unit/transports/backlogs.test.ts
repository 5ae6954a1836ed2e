/** Backlogs: one cap on what the clients of every listener have queued together. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../../../src/core/ports.js';
import { type Backlogged, Backlogs, SAMPLE_MS } from '../../../src/transports/backlogs.js';

class Client implements Backlogged {
  shedAt: number | undefined;
  taken = 0;
  held = 0;
  constructor(
    public queued: number,
    private readonly fails = false,
  ) {}
  queuedBytes(): number {
    return this.queued;
  }
  heldBytes(): number {
    return this.held;
  }
  takenBytes(): number {
    return this.taken;
  }
  shed(queued: number): void {
    this.shedAt = queued;
    if (this.fails) throw new Error('cannot close');
  }
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

/** Lets `total` milliseconds pass in steps of a sample, calling `each` before each step. */
function pass(total: number, each: (at: number) => void = () => {}): void {
  for (let at = SAMPLE_MS; at <= total; at += SAMPLE_MS) {
    each(at);
    vi.advanceTimersByTime(SAMPLE_MS);
  }
}

afterEach(() => {
  vi.useRealTimers();
});

describe('Backlogs', () => {
  it('closes the clients holding most until what the rest hold fits', async () => {
    const backlogs = new Backlogs({ maxQueue: 100, maxQueueTotal: 250 }, silentLogger);
    const clients = [60, 90, 70, 80].map((q) => new Client(q));
    for (const c of clients) backlogs.add(c);
    await turn();
    // 300 held: closing the one with 90 leaves 210.
    expect(clients.map((c) => c.shedAt)).toEqual([undefined, 90, undefined, undefined]);
    expect(backlogs.size).toBe(3);
  });

  it('closes the clients that took nothing for longest first, whatever they hold', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const backlogs = new Backlogs({ maxQueue: 100, maxQueueTotal: 150 }, silentLogger);
    const reader = new Client(90);
    const stalled = [40, 50, 30].map((q) => new Client(q));
    backlogs.add(stalled[0]!);
    backlogs.add(stalled[1]!);
    await turn();
    pass(SAMPLE_MS);
    // The reader, holding most, falls behind later: of the 210 held, the older two go.
    backlogs.add(reader);
    backlogs.add(stalled[2]!);
    await turn();
    expect(reader.shedAt).toBeUndefined();
    expect(stalled.map((c) => c.shedAt)).toEqual([40, 50, undefined]);
    // Both left fell behind at the same moment; the reader has taken some since.
    pass(SAMPLE_MS);
    reader.taken = 30;
    stalled[2]!.queued = 70;
    backlogs.add(reader);
    await turn();
    expect(reader.shedAt).toBeUndefined();
    expect(stalled[2]!.shedAt).toBe(70);
    expect(backlogs.size).toBe(1);
  });

  it('tells a client reading slowly in steps from clients that stopped once their buffers filled', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const backlogs = new Backlogs({ maxQueue: 100, maxQueueTotal: 300 }, silentLogger);
    // Replaying a long history, its queue kept near half its cap; it reads in window-sized steps.
    const reader = new Client(90);
    // Live events held behind their replays; their kernels take a little at first, then nothing.
    const stalled = [40, 40, 40].map((q) => new Client(q));
    for (const c of [reader, ...stalled]) backlogs.add(c);
    await turn();
    pass(2_000, (at) => {
      if (at === 2 * SAMPLE_MS) for (const c of stalled) c.taken = 20;
      if (at % 600 === 0) reader.taken += 10;
      for (const c of stalled) c.queued += 4;
    });
    // 330 held at 2 s: the total is passed when the next event is held.
    for (const c of stalled) backlogs.add(c, true);
    await turn();
    expect(reader.shedAt).toBeUndefined();
    expect(stalled.filter((c) => c.shedAt !== undefined)).toHaveLength(1);
  });

  it('of clients alike, closes first those holding live events behind a replay', async () => {
    const backlogs = new Backlogs({ maxQueue: 100, maxQueueTotal: 200 }, silentLogger);
    // Its own replay, sent only as it takes it: its kernel hides its slow reading meanwhile.
    const reader = new Client(90);
    const holders = [50, 60, 40].map((q) => new Client(q));
    for (const c of holders) c.held = c.queued - 10;
    for (const c of [reader, ...holders]) backlogs.add(c, c.held > 0);
    await turn();
    // 240 held: the holder with most live events goes, though the reader holds more.
    expect(reader.shedAt).toBeUndefined();
    expect(holders.map((c) => c.shedAt)).toEqual([undefined, 60, undefined]);
  });

  it('looks at the clients only while any is behind', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const backlogs = new Backlogs({ maxQueue: 100, maxQueueTotal: 1_000 }, silentLogger);
    const client = new Client(50);
    backlogs.add(client);
    expect(vi.getTimerCount()).toBe(1);
    pass(SAMPLE_MS);
    expect(backlogs.size).toBe(1);
    client.queued = 0;
    pass(SAMPLE_MS);
    expect(backlogs.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('closes nobody while the total fits, and forgets clients that caught up', async () => {
    const backlogs = new Backlogs({ maxQueue: 100, maxQueueTotal: 250 }, silentLogger);
    const clients = [100, 100, 50, 0].map((q) => new Client(q));
    for (const c of clients) backlogs.add(c);
    await turn();
    expect(clients.every((c) => c.shedAt === undefined)).toBe(true);
    expect(backlogs.size).toBe(3);
    expect(backlogs.queued()).toBe(250);
    clients[2]!.queued = 0;
    expect(backlogs.queued()).toBe(200);
    expect(backlogs.size).toBe(2);
    backlogs.delete(clients[0]!);
    expect(backlogs.size).toBe(1);
  });

  it('goes on closing the others when closing one fails, and applies a cap changed meanwhile', async () => {
    const limits = { maxQueue: 100, maxQueueTotal: 1_000 };
    const backlogs = new Backlogs(limits, silentLogger);
    const clients = [new Client(100, true), new Client(90), new Client(80)];
    for (const c of clients) backlogs.add(c);
    await turn();
    expect(clients.some((c) => c.shedAt !== undefined)).toBe(false);
    limits.maxQueueTotal = 100;
    backlogs.add(clients[2]!);
    await turn();
    expect(clients.map((c) => c.shedAt)).toEqual([100, 90, undefined]);
    expect(backlogs.size).toBe(1);
  });
});
