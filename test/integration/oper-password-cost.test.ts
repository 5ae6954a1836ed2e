import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/password.js';
import { join, RawClient } from '../helpers/raw-client.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';
import { useTempDir } from '../helpers/temp-dir.js';

/**
 * OPER checks are budgeted (five per address at once, ten for the server)
 * because each costs about 50 ms of hashing: the event loop is held half a
 * second at most. But the password is brought to NFC before it is hashed,
 * whatever its length, and normalising a long run of combining marks of
 * alternating classes costs time by the square of its length: a password of
 * "a" and 30,000 such marks (60 KB, under --max-frame) took some 700 ms more
 * per check, so the five checks one address gets at once held the room for
 * seconds, and each later one for most of a second.
 */

/** "a" and 30,000 marks, classes 230 and 220 alternating: 60 KB of UTF-8. */
const MARKS = `a${'\u0301\u0316'.repeat(15_000)}`;

const dir = useTempDir('confab-oper-cost-');
let server: SpawnedServer | undefined;

afterEach(async () => {
  await server?.stop();
  server = undefined;
});

describe('OPER with a password of a long run of combining marks', () => {
  it('costs what any wrong password costs: the room is not held for seconds', async () => {
    const config = path.join(dir.path, 'confab.yaml');
    writeFileSync(
      config,
      `operators:\n  - name: teacher\n    password: "${hashPassword('sesame')}"\n`,
    );
    server = await spawnServer(['--config', config, '--data-dir', dir.path]);
    const bob = await join(server.port, 'bob', { caps: ['errors'] });
    const eve = await join(server.port, 'eve', { caps: ['errors'] });
    bob.drain();
    eve.drain();
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
    // The five checks the address is given at once, each with its own frame.
    for (let i = 0; i < 5; i++) {
      eve.write(`${JSON.stringify({ cmd: '92', name: 'teacher', password: MARKS })}\n`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await eve.waitFor((m) => m.cmd === '90', 5, 60_000);
    finished = true;
    await asking;
    // Five wrong passwords are refused, as any wrong password.
    expect(eve.drain().filter((m) => m.cmd === '90' && m.code === 1010)).toHaveLength(5);
    // Each check is one scrypt (some 50 ms); 700 ms more each held the bystander that long.
    expect(longest).toBeLessThan(400);
    // The real password still works.
    const op = await RawClient.open(server.port, '127.0.0.1', '127.0.0.2');
    op.write(`${JSON.stringify({ cmd: '0', nickname: 'tess', caps: ['errors'] })}\n`);
    await op.expect('03');
    op.write(`${JSON.stringify({ cmd: '92', name: 'teacher', password: 'sesame' })}\n`);
    expect(await op.expect('93')).toMatchObject({ name: 'teacher' });
    op.close();
    bob.close();
    eve.close();
  });
});
