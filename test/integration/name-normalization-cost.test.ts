import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { join, RawClient } from '../helpers/raw-client.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';

/**
 * Nicknames and room names are brought to NFC before their length is
 * checked, and normalising a long run of combining marks of alternating
 * classes costs time by the square of its length (canonical reordering):
 * one frame under --max-frame of "a" and 30,000 such marks took some 600 ms
 * of the event loop to refuse, and a course client may send a burst of 40
 * of them. A name longer than any NFC form of a permitted name is refused
 * without normalising it.
 */

/** "a" and 30,000 marks, classes 230 and 220 alternating: 60 KB of UTF-8, under --max-frame. */
const MARKS = `a${'\u0301\u0316'.repeat(15_000)}`;

/**
 * The longest a bystander waits for an RTT to be answered, asking every 20 ms
 * from just before the frames go out until `done` resolves.
 */
async function bystanderWait(
  server: SpawnedServer,
  send: () => void,
  done: () => Promise<unknown>,
): Promise<number> {
  const bob = await join(server.port, 'bob', { caps: ['errors'] });
  bob.drain();
  let longest = 0;
  let finished = false;
  const asking = (async () => {
    while (!finished) {
      const started = Date.now();
      bob.write(`${JSON.stringify({ cmd: '6', beginTime: started })}\n`);
      await bob.expect('60', 30_000);
      longest = Math.max(longest, Date.now() - started);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  await new Promise((resolve) => setTimeout(resolve, 50));
  send();
  await done();
  finished = true;
  await asking;
  bob.close();
  return longest;
}

let server: SpawnedServer;

beforeEach(async () => {
  server = await spawnServer(['--max-users', '20']);
});

afterEach(async () => {
  await server.stop();
});

describe('names of long runs of combining marks', () => {
  it('cost a RENAME little: a burst of them does not hold up the room', async () => {
    const eve = await join(server.port, 'eve', { caps: ['errors'] });
    const waited = await bystanderWait(
      server,
      () => {
        for (let i = 0; i < 6; i++)
          eve.write(`${JSON.stringify({ cmd: '5', newNickname: MARKS })}\n`);
      },
      () => eve.waitFor((m) => m.cmd === '90', 6, 30_000),
    );
    expect(waited).toBeLessThan(250);
    eve.close();
  });

  it('cost a JOIN_ROOM little', async () => {
    const eve = await join(server.port, 'eve', { caps: ['errors', 'rooms'] });
    const waited = await bystanderWait(
      server,
      () => {
        for (let i = 0; i < 6; i++) eve.write(`${JSON.stringify({ cmd: '100', room: MARKS })}\n`);
      },
      () => eve.waitFor((m) => m.cmd === '90', 6, 30_000),
    );
    expect(waited).toBeLessThan(250);
    eve.close();
  });

  it('cost a CONNECT little', async () => {
    const eves = await Promise.all(Array.from({ length: 6 }, () => RawClient.open(server.port)));
    const waited = await bystanderWait(
      server,
      () => {
        for (const eve of eves) eve.write(`${JSON.stringify({ cmd: '0', nickname: MARKS })}\n`);
      },
      () => Promise.all(eves.map((eve) => eve.expectClose(30_000))),
    );
    expect(waited).toBeLessThan(250);
  });

  it('a course client refused such a name still renames and is seen by the course protocol', async () => {
    const eve = await join(server.port, 'eve');
    // As the course client sends: json.dumps escapes every mark (6 bytes each), 10,000 of them.
    eve.sendPy({ cmd: '5', newNickname: `a${'\u0301\u0316'.repeat(5_000)}` });
    expect(await eve.expect('50', 30_000)).toEqual({ cmd: '50' });
    eve.sendPy({ cmd: '5', newNickname: 'eva' });
    expect(await eve.expect('51')).toEqual({ cmd: '51', newNickname: 'eva' });
    eve.close();
  });
});
