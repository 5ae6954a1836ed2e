/**
 * One server alone on a --data-dir locks it, whatever its history: two would each rewrite
 * bans.json whole from their own list, and a ban one had acknowledged would be lost. The lock
 * goes with the server that held it, when it stops or fails to start. (Servers in other
 * processes: integration/history, "says so when history.db was restored…".)
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { ownDataDir, startConfab } from '../helpers/servers.js';

describe('the --data-dir lock', () => {
  it('refuses a second server on the directory until the first has stopped', async () => {
    const dir = ownDataDir();
    const first = await startConfab({ 'data-dir': dir, history: 'off' });
    try {
      for (const history of ['off', 'memory', 'sqlite'])
        await expect(startConfab({ 'data-dir': dir, history })).rejects.toThrow(
          `--data-dir ${dir}: another confab is using it (confab.lock is held)`,
        );
    } finally {
      await first.stop();
    }
    const again = await startConfab({ 'data-dir': dir, history: 'sqlite' });
    await again.stop();
  });

  it('lets go of it when the start fails after taking it', async () => {
    const dir = ownDataDir();
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as net.AddressInfo).port;
    try {
      await expect(
        startConfab({ 'data-dir': dir, host: '127.0.0.1', port: String(port) }),
      ).rejects.toThrow(/port/);
    } finally {
      busy.close();
    }
    const again = await startConfab({ 'data-dir': dir });
    await again.stop();
  });
});
