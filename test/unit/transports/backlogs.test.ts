/** Backlogs: one cap on what the clients of every listener have queued together. */
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/core/ports.js';
import { type Backlogged, Backlogs } from '../../../src/transports/backlogs.js';

class Client implements Backlogged {
  shedAt: number | undefined;
  constructor(
    public queued: number,
    private readonly fails = false,
  ) {}
  queuedBytes(): number {
    return this.queued;
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
