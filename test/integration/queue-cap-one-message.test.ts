import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConfabServer } from '../../src/server.js';
import { join, pyDumps, type RawClient } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';

let server: ConfabServer;
const clients: RawClient[] = [];

beforeAll(async () => {
  // A small per-client queue, as a memory-tight host sets it (the option allows 4096 and up);
  // --max-message stays at its default of 4096 characters.
  server = await startConfab({ 'max-queue': '16384' });
});

afterAll(async () => {
  for (const c of clients.splice(0)) c.close();
  await server.stop();
});

async function member(nickname: string, extra: object = {}): Promise<RawClient> {
  const c = await join(server.address.port, nickname, extra);
  clients.push(c);
  return c;
}

describe('one message larger than --max-queue', () => {
  it('does not cut off the members who read it, with nothing else queued for them', async () => {
    const ann = await member('ann', { caps: ['errors'] });
    const carl = await member('carl');
    const eve = await member('eve', { caps: ['errors'] });
    ann.drain();
    carl.drain();
    // One chat within --max-message: 4096 control characters, each six bytes once escaped
    // in JSON (about 24 KB to ann), and shown as "^A" to the course client (8 KB in 1024-byte
    // frames to carl).
    eve.sendPy({ cmd: '7', msg: '\u0001'.repeat(4096) });
    eve.sendPy({ cmd: '4' });
    await eve.expect('40');
    // Both were reading and had nothing queued: they get the chat and stay.
    expect(await ann.expect('70')).toMatchObject({ msg: '\u0001'.repeat(4096) });
    await carl.expect('70');
    ann.sendPy({ cmd: '4' });
    await ann.expect('40');
    carl.sendPy({ cmd: '4' });
    await carl.expect('40');
    expect(ann.isClosed).toBe(false);
    expect(carl.isClosed).toBe(false);
  }, 20_000);

  it('does not cut off the members who read it when a short chat comes just before it', async () => {
    const dan = await member('dan', { caps: ['errors'] });
    const fay = await member('fay', { caps: ['errors'] });
    dan.drain();
    // One write, so both chats are read in one turn: the short one is in dan's batch
    // (something queued) when the long one reaches him.
    fay.write(pyDumps({ cmd: '7', msg: 'hi' }) + pyDumps({ cmd: '7', msg: '\u0001'.repeat(4096) }));
    fay.sendPy({ cmd: '4' });
    await fay.expect('40');
    expect(await dan.expect('70')).toMatchObject({ msg: 'hi' });
    expect(await dan.expect('70')).toMatchObject({ msg: '\u0001'.repeat(4096) });
    dan.sendPy({ cmd: '4' });
    await dan.expect('40');
    expect(dan.isClosed).toBe(false);
  }, 20_000);
});
