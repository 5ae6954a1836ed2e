/**
 * A KICK whose target is on a node that cannot hear it (killed, not reaped yet: its
 * members are still registered) is answered: nothing else would tell the operator.
 */
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/password.js';
import { useCluster } from '../helpers/cluster.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
// Long enough that the killed node is not reaped during the test.
const file = useCluster('kick-unheard', 2, ['--cluster-timeout', '30'], (dir) => {
  const config = path.join(dir, 'confab.yaml');
  writeFileSync(
    config,
    `operators:\n  - name: teacher\n    password: "${hashPassword('open sesame')}"\n`,
  );
  return ['--config', config];
});

describe.skipIf(skip)('a KICK nobody hears', () => {
  it('answers the operator 1022 when the target’s node is gone but not yet reaped', async () => {
    const op = await file.join(0, 'op', { caps: ['errors', 'moderation'] });
    op.sendPy({ cmd: '92', name: 'teacher', password: 'open sesame' });
    await op.expect('93');
    await file.join(1, 'victim');
    const dead = file.cluster.nodes[1]!.child;
    const exited = once(dead, 'exit');
    dead.kill('SIGKILL');
    await exited;
    op.sendPy({ cmd: '94', nickname: 'victim', reason: 'spam' });
    const refused = await op.waitFor((m) => m.cmd === '90', 1, 10_000);
    expect(refused).toMatchObject({ cmd: '90', code: 1022, ref: '94' });
    expect(op.received.some((m) => m.cmd === '99')).toBe(false);
  }, 30_000);
});
