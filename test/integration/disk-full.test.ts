/**
 * The server on a data dir whose disk fills up (a small tmpfs; root only, else the file says
 * why and skips): chats that cannot be stored close their senders with 3005, and /healthz
 * must say so rather than "ok".
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/protocol/codes.js';
import { join } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';
import { fill, mountSmallDisk, noSmallDisk } from '../helpers/small-disk.js';

if (noSmallDisk !== undefined) console.log(`skipped: ${noSmallDisk}`);

describe.skipIf(noSmallDisk !== undefined)('a server whose disk is full', () => {
  let dir = '';
  let unmount = () => {};
  beforeAll(() => {
    const disk = mountSmallDisk('1m');
    if (typeof disk === 'string') console.log(`skipped: ${disk}`);
    else ({ dir, unmount } = disk);
  });
  afterAll(() => unmount());

  it('says "degraded" in /healthz once a chat could not be stored', async (ctx) => {
    if (dir === '') ctx.skip();
    const server = await startConfab({ 'data-dir': dir, history: 'sqlite', 'http-port': '0' });
    try {
      const health = async () =>
        (await fetch(`http://127.0.0.1:${server.httpAddress!.port}/healthz`)).json();
      const listener = await join(server.address.port, 'listener');
      expect(await health()).toMatchObject({ status: 'ok' });
      fill(path.join(dir, 'filler'));
      // The WAL may still have pages to write into for a while: chat until one fails.
      let failed = false;
      for (let i = 0; i < 200 && !failed; i++) {
        const ann = await join(server.address.port, `ann${i}`, { caps: ['errors'] });
        ann.sendPy({ cmd: '7', msg: `${i} ${'x'.repeat(4000)}` });
        // The one that loses the race times out later: nobody waits for it then.
        const first = await Promise.race([
          ann.expect('90').catch(() => undefined),
          listener.expect('70').catch(() => undefined),
        ]);
        failed = first?.cmd === '90';
        if (failed) expect(first).toMatchObject({ code: ErrorCode.INTERNAL_ERROR });
        ann.close();
      }
      expect(failed).toBe(true);
      expect(await health()).toMatchObject({ status: 'degraded', history: 'failing' });
      listener.close();
    } finally {
      await server.stop();
    }
  }, 60_000);
});
