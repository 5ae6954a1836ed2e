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
 * second at most. A password is brought to NFC before it is hashed, and NFC
 * of a long run of combining marks costs time by the square of its length
 * (700 ms for 60 KB of them), so a password longer than 1,024 characters is
 * wrong without being looked at (unit/core/lookup-marks counts what reaches
 * the normaliser). Over the wire: such OPERs are refused as any wrong
 * password is, and the real one still works.
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
  it('is refused as any wrong password is, and the real one still works', async () => {
    const config = path.join(dir.path, 'confab.yaml');
    writeFileSync(
      config,
      `operators:\n  - name: teacher\n    password: "${hashPassword('sesame')}"\n`,
    );
    server = await spawnServer(['--config', config, '--data-dir', dir.path]);
    const eve = await join(server.port, 'eve', { caps: ['errors'] });
    eve.drain();
    // The five checks the address is given at once, each with its own frame.
    for (let i = 0; i < 5; i++) {
      eve.write(`${JSON.stringify({ cmd: '92', name: 'teacher', password: MARKS })}\n`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await eve.waitFor((m) => m.cmd === '90', 5, 60_000);
    // Five wrong passwords are refused, as any wrong password.
    expect(eve.drain().filter((m) => m.cmd === '90' && m.code === 1010)).toHaveLength(5);
    // The real password still works.
    const op = await RawClient.open(server.port, '127.0.0.1', '127.0.0.2');
    op.write(`${JSON.stringify({ cmd: '0', nickname: 'tess', caps: ['errors'] })}\n`);
    await op.expect('03');
    op.write(`${JSON.stringify({ cmd: '92', name: 'teacher', password: 'sesame' })}\n`);
    expect(await op.expect('93')).toMatchObject({ name: 'teacher' });
    op.close();
    eve.close();
  });
});
