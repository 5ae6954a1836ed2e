/** Backlogs: one cap on what the clients of every listener have queued together. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../../../src/core/ports.js';
import { type Backlogged, Backlogs } from '../../../src/transports/backlogs.js';
import { SAMPLE_MS } from '../../../src/transports/progress.js';

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

  it('of clients that took nothing, closes the newest first, whatever they hold', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const backlogs = new Backlogs({ maxQueue: 100, maxQueueTotal: 100 }, silentLogger);
    // A slow reader whose kernel hides its steps for now, and a wave of clients after it.
    const older = new Client(90);
    backlogs.add(older);
    pass(20 * SAMPLE_MS);
    const wave = [40, 50].map((q) => new Client(q));
    for (const c of wave) backlogs.add(c);
    pass(2 * SAMPLE_MS);
    backlogs.add(older);
    await turn();
    expect(older.shedAt).toBeUndefined();
    expect(wave.map((c) => c.shedAt)).toEqual([40, 50]);
  });

  it('takes a count that goes down for no move, not for a client starting afresh', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const backlogs = new Backlogs({ maxQueue: 100, maxQueueTotal: 150 }, silentLogger);
    const reader = new Client(90);
    const shrinking = new Client(90);
    shrinking.taken = 1_000;
    for (const c of [reader, shrinking]) backlogs.add(c);
    pass(6 * SAMPLE_MS, (at) => {
      if (at % (2 * SAMPLE_MS) === 0) reader.taken += 10;
      shrinking.taken -= 5;
    });
    backlogs.add(shrinking);
    await turn();
    expect([reader.shedAt, shrinking.shedAt]).toEqual([undefined, 90]);
  });

  it('closes clients that take nothing before one that reads, however recently they fell behind', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const backlogs = new Backlogs({ maxQueue: 100, maxQueueTotal: 140 }, silentLogger);
    // Reads in steps three looks apart, as a kernel shows a slow reader's progress.
    const reader = new Client(90);
    backlogs.add(reader);
    const stalled: Client[] = [];
    pass(4_000, (at) => {
      if (at % (3 * SAMPLE_MS) === 0) reader.taken += 10;
      // A new client that reads nothing each look: its kernel took what it could of the
      // write that left the rest behind, and takes nothing more.
      const c = new Client(30);
      c.taken = 20;
      stalled.push(c);
      backlogs.add(c);
    });
    await turn();
    expect(reader.shedAt).toBeUndefined();
    expect(stalled.filter((c) => c.shedAt !== undefined).length).toBeGreaterThan(0);
  });

  it('closes clients not looked at yet before one seen reading, when many fall behind at once', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const backlogs = new Backlogs({ maxQueue: 100, maxQueueTotal: 200 }, silentLogger);
    const reader = new Client(90);
    backlogs.add(reader);
    pass(6 * SAMPLE_MS, (at) => {
      if (at % (3 * SAMPLE_MS) === 0) reader.taken += 10;
    });
    // Ten at once, within one look: nothing is known of them yet.
    const burst = Array.from({ length: 10 }, () => new Client(30));
    for (const c of burst) backlogs.add(c);
    await turn();
    expect(reader.shedAt).toBeUndefined();
    expect(burst.filter((c) => c.shedAt !== undefined)).toHaveLength(7);
  });

  it('of clients that read, closes the slowest first', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const backlogs = new Backlogs({ maxQueue: 100, maxQueueTotal: 100 }, silentLogger);
    const fast = new Client(90);
    const slow = new Client(80);
    const stalled = new Client(20);
    for (const c of [fast, slow, stalled]) backlogs.add(c);
    pass(2_000, (at) => {
      if (at % (2 * SAMPLE_MS) === 0) {
        fast.taken += 50;
        slow.taken += 5;
      }
    });
    backlogs.add(slow);
    await turn();
    // 190 held: the one that took nothing goes, then the slower reader, though it holds less.
    expect([fast.shedAt, slow.shedAt, stalled.shedAt]).toEqual([undefined, 80, 20]);
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
