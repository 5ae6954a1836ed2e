import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import { spawnServer, waitFor } from '../helpers/spawn-server.js';

const dir = mkdtempSync(path.join(tmpdir(), 'confab-reload-limits-'));

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('SIGHUP lowering the flood limit', () => {
  it('does not disconnect a connected client that paces itself to the limits it was told', async () => {
    const file = path.join(dir, 'confab.yaml');
    writeFileSync(file, 'rate-limit: 20\nrate-burst: 40\n');
    const server = await spawnServer(['--config', file]);
    try {
      const ann = await ChatClient.connect({ port: server.port, nickname: 'ann' });
      const bob = await ChatClient.connect({ port: server.port, nickname: 'bob' });
      const heard: string[] = [];
      ann.on('chat', (m) => heard.push(m.msg));
      let closed: unknown;
      bob.on('close', (c) => {
        closed = c;
      });

      writeFileSync(file, 'rate-limit: 2\nrate-burst: 4\n');
      server.child.kill('SIGHUP');
      await waitFor(server.output, 'configuration reloaded');

      // A pasted page, paced by bob's client at the rate and burst its "03" announced.
      const lines = Array.from({ length: 30 }, (_, i) => `line ${i}`);
      for (const line of lines) bob.chat(line);
      await new Promise((r) => setTimeout(r, 3_000));

      // "SIGHUP ... applies ... without disconnecting anyone" (README): bob is still here.
      expect(closed).toBeUndefined();
      expect((await ann.users()).map((u) => u[0])).toEqual(['ann', 'bob']);
      await bob.exit();
      await ann.exit();
    } finally {
      await server.stop();
    }
  }, 30_000);
});
