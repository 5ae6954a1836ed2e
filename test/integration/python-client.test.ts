import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ROOT, startConfab, startSeed, withoutSeed } from '../helpers/servers.js';

const run = promisify(execFile);
const noSeed = withoutSeed();
const SCRIPT = path.join(ROOT, 'test', 'fixtures', 'course_client.py');

async function session(port: number): Promise<string> {
  const { stdout } = await run('python3', [SCRIPT, String(port)], { timeout: 20_000 }).catch(
    (err: { stdout?: string; stderr?: string }) => {
      throw new Error(`course client failed:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
    },
  );
  return stdout.trim();
}

describe('a course-style Python client, unchanged', () => {
  it.skipIf(noSeed)(
    'passes its session against the course server (the script is faithful)',
    async () => {
      const seed = await startSeed();
      try {
        expect(await session(seed.port)).toBe('OK');
      } finally {
        await seed.stop();
      }
    },
  );

  it('passes the same session against confab', async () => {
    const server = await startConfab();
    try {
      expect(await session(server.address.port)).toBe('OK');
    } finally {
      await server.stop();
    }
  });
});
