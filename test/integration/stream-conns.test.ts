import { afterEach, describe, expect, it } from 'vitest';
import type { ConfabServer } from '../../src/server.js';
import { join, RawClient } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';

let server: ConfabServer | undefined;

afterEach(async () => {
  await server?.stop();
  server = undefined;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `read` until two readings `ms` apart agree (at most `tries` times); returns the last. */
async function settled(read: () => number, ms = 150, tries = 100): Promise<number> {
  let last = read();
  for (let i = 0; i < tries; i++) {
    await sleep(ms);
    const now = read();
    if (now === last) return now;
    last = now;
  }
  return last;
}

describe('stream connections', () => {
  it('closes each silent connection at its own handshake deadline, and only those', async () => {
    server = await startConfab({ 'handshake-timeout': '1' });
    const port = server.address.port;
    const first = await RawClient.open(port);
    // Arrives later, so its deadline is later than the first one's.
    await sleep(400);
    const second = await RawClient.open(port);
    const member = await join(port, 'punctual');
    await first.expectClose(5000);
    await second.expectClose(5000);
    expect(first.drain()).toEqual([]);
    expect(second.drain()).toEqual([]);
    // The member joined in time and is still served.
    member.sendPy({ cmd: '4' });
    await member.expect('40');
    expect(server.chat.connectionCount).toBe(1);
    member.close();
  });
});
