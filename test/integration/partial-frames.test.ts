/**
 * Unfinished requests are capped for all clients together (--max-partial-total), not only
 * each at --max-frame: connections that send most of a frame and never its end are closed,
 * those holding most first, and the server serves on.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { OVER_PARTIAL } from '../../src/transports/partial-frames.js';
import { join, RawClient } from '../helpers/raw-client.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';

let server: SpawnedServer | undefined;
const clients: RawClient[] = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.socket.destroy();
  await server?.stop();
  server = undefined;
});

/** A CONNECT of `bytes` whose end never comes. */
function unfinished(bytes: number): string {
  const head = '{"cmd":"0","nickname":"';
  return head + 'x'.repeat(bytes - head.length);
}

async function holding(port: number, bytes: number): Promise<RawClient> {
  const client = await RawClient.open(port);
  clients.push(client);
  client.write(unfinished(bytes));
  return client;
}

describe('unfinished requests of many connections', () => {
  it('are closed past --max-partial-total, largest first; the others and the server go on', async () => {
    server = await spawnServer(['--max-partial-total', '1048576', '--rate-limit', '0']);
    const port = server.port;
    const member = await join(port, 'member');
    clients.push(member);
    // Small unfinished requests, first: within the total they stay.
    const small: RawClient[] = [];
    for (let i = 0; i < 10; i++) small.push(await holding(port, 2_000));
    // 40 of 60,000 bytes, 2.4 MB in all: the total keeps at most 17 of them (1 MiB, less the
    // small ones', each time it passes; three quarters of it after).
    const large: RawClient[] = [];
    for (let i = 0; i < 40; i++) large.push(await holding(port, 60_000));
    const closedBy = async (deadline: number) => {
      while (Date.now() < deadline && large.filter((c) => c.isClosed).length < 23)
        await new Promise((resolve) => setTimeout(resolve, 50));
      return large.filter((c) => c.isClosed).length;
    };
    const closed = await closedBy(Date.now() + 10_000);
    expect(closed).toBeGreaterThanOrEqual(23);
    expect(closed).toBeLessThan(40);
    expect(server.output()).toContain(OVER_PARTIAL);
    // The small ones, holding least, were kept, and can still finish their CONNECT.
    expect(small.filter((c) => c.isClosed)).toEqual([]);
    small[0]!.write('"}');
    await small[0]!.expect('01', 10_000); // its nickname of 1,977 characters is no nickname
    member.sendPy({ cmd: '6', beginTime: 1 });
    await member.expect('60', 10_000);
  }, 60_000);
});
