/** Backlogs: one cap on what the clients of every listener have queued together. */
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/core/ports.js';
import { type Backlogged, Backlogs } from '../../../src/transports/backlogs.js';

class Client implements Backlogged {
  shedAt: number | undefined;
  taken = 0;
  constructor(
    public queued: number,
    private readonly fails = false,
  ) {}
  queuedBytes(): number {
    return this.queued;
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

  it('closes the clients that took nothing for the most checks first, whatever they hold', async () => {
    const backlogs = new Backlogs({ maxQueue: 100, maxQueueTotal: 150 }, silentLogger);
    const reader = new Client(90);
    const stalled = [40, 50, 30].map((q) => new Client(q));
    backlogs.add(stalled[0]!);
    backlogs.add(stalled[1]!);
    await turn();
    // The reader, holding most, falls behind later: of the 210 held, the older two go.
    backlogs.add(reader);
    backlogs.add(stalled[2]!);
    await turn();
    expect(reader.shedAt).toBeUndefined();
    expect(stalled.map((c) => c.shedAt)).toEqual([40, 50, undefined]);
    // Both left fell behind at the same check; the reader has taken some since.
    reader.taken = 30;
    stalled[2]!.queued = 70;
    backlogs.add(reader);
    await turn();
    expect(reader.shedAt).toBeUndefined();
    expect(stalled[2]!.shedAt).toBe(70);
    expect(backlogs.size).toBe(1);
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
