/**
 * Loading ioredis turns String.prototype into a dictionary (it makes a class
 * of String), and V8 then compiles every method call on a string as a generic
 * lookup, several times slower. src/store/redis-client.ts undoes it; this
 * asks V8 itself, in a fresh process, whether the prototype is fast once the
 * server's modules are loaded.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/servers.js';

/** Whether String.prototype has fast properties after importing `specifier` in a new node. */
function fastAfterImporting(specifier: string): boolean {
  const out = spawnSync(
    process.execPath,
    [
      '--allow-natives-syntax',
      '--input-type=module',
      '-e',
      `await import(${JSON.stringify(specifier)});
       process.stdout.write(String(%HasFastProperties(String.prototype)));`,
    ],
    { cwd: ROOT, encoding: 'utf8', timeout: 30_000 },
  );
  expect(out.status, out.stderr).toBe(0);
  return out.stdout === 'true';
}

describe('String.prototype', () => {
  it('is made a dictionary by ioredis alone (if not, the workaround can go)', () => {
    expect(fastAfterImporting('ioredis')).toBe(false);
  });

  it('is fast again once the server, ioredis included, is loaded', () => {
    const server = pathToFileURL(path.join(ROOT, 'dist', 'server.js')).href;
    expect(fastAfterImporting(server)).toBe(true);
  });
});
