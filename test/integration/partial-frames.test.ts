/**
 * Unfinished requests are capped for all clients together (--max-partial-total), not only
 * each at --max-frame: connections that send most of a frame and never its end are closed,
 * those unfinished longest first, and the server, and a client whose long chat arrives in
 * pieces meanwhile, go on.
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

const settle = () => new Promise((resolve) => setTimeout(resolve, 300));

describe('unfinished requests of many connections', () => {
  it('are closed past --max-partial-total, oldest first; a long chat in pieces meanwhile goes through', async () => {
    server = await spawnServer(['--max-partial-total', '1048576', '--rate-limit', '0']);
    const port = server.port;
    const member = await join(port, 'member');
    clients.push(member);
    const reader = await join(port, 'reader');
    clients.push(reader);
    // 52 of 20,000 bytes: 1,040,000, just under the total, each less than the chat below.
    const holders: RawClient[] = [];
    for (let i = 0; i < 52; i++) holders.push(await holding(port, 20_000));
    await settle();
    expect(holders.filter((c) => c.isClosed)).toEqual([]);
    // A course client's longest chat as Python's json.dumps escapes it (48 KB), in two pieces:
    // its first half passes the total.
    const chat = JSON.stringify({ cmd: '7', msg: '😀'.repeat(4000) }).replace(
      /😀/g,
      '\\ud83d\\ude00',
    );
    member.write(chat.slice(0, 25_000));
    await settle();
    expect(member.isClosed).toBe(false);
    const closed = holders.filter((c) => c.isClosed).length;
    // Down to three quarters of the total: the 13 or more that began first.
    expect(closed).toBeGreaterThanOrEqual(13);
    expect(holders.slice(0, closed).every((c) => c.isClosed)).toBe(true);
    expect(server.output()).toContain(OVER_PARTIAL);
    member.write(chat.slice(25_000));
    // A course client reads it in frames of 1,024 bytes: the first is enough.
    const got = await reader.waitFor((m) => m.cmd === '70' && m.from === 'member', 1, 10_000);
    expect(String(got.msg)).toMatch(/^(😀)+$/u);
    member.sendPy({ cmd: '6', beginTime: 1 });
    await member.expect('60', 10_000);
  }, 60_000);
});
