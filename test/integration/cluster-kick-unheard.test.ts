/**
 * A KICK whose target is on a node that cannot hear it (killed, not reaped yet: its
 * members are still registered) is answered: nothing else would tell the operator.
 */
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/password.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
let cluster: TestCluster | undefined;
let dir: string | undefined;
const clients: RawClient[] = [];

beforeAll(async () => {
  if (skip) return;
  dir = mkdtempSync(path.join(os.tmpdir(), 'confab-kick-unheard-'));
  const config = path.join(dir, 'confab.yaml');
  writeFileSync(
    config,
    `operators:\n  - name: teacher\n    password: "${hashPassword('open sesame')}"\n`,
  );
  // Long enough that the killed node is not reaped during the test.
  cluster = await startCluster(2, ['--cluster-timeout', '30', '--config', config]);
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await cluster?.stop();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
}, 60_000);

async function join(node: number, nickname: string, extra: object = {}): Promise<RawClient> {
  const client = await RawClient.open(cluster!.nodes[node]!.port);
  clients.push(client);
  client.sendPy({ cmd: '0', nickname, ...extra });
  await client.expect('03', 10_000);
  return client;
}

describe.skipIf(skip)('a KICK nobody hears', () => {
  it('answers the operator 1022 when the target’s node is gone but not yet reaped', async () => {
    const op = await join(0, 'op', { caps: ['errors', 'moderation'] });
    op.sendPy({ cmd: '92', name: 'teacher', password: 'open sesame' });
    await op.expect('93');
    await join(1, 'victim');
    const dead = cluster!.nodes[1]!.child;
    const exited = once(dead, 'exit');
    dead.kill('SIGKILL');
    await exited;
    op.sendPy({ cmd: '94', nickname: 'victim', reason: 'spam' });
    const refused = await op.waitFor((m) => m.cmd === '90', 1, 10_000);
    expect(refused).toMatchObject({ cmd: '90', code: 1022, ref: '94' });
    expect(op.received.some((m) => m.cmd === '99')).toBe(false);
  }, 30_000);
});
