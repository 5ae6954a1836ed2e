/**
 * Loading ioredis turns String.prototype into a dictionary (it makes a class
 * of String), and V8 then compiles every method call on a string as a generic
 * lookup, several times slower. src/store/ioredis.ts undoes it; this asks V8
 * itself, in a fresh process, whether the prototype is fast once the server's
 * modules are loaded.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/servers.js';

/** Whether String.prototype has fast properties after importing `specifier` in a new node. */
function fastAfterImporting(specifier: string, nodeFlags: string[] = []): boolean {
  const out = spawnSync(
    process.execPath,
    [
      ...nodeFlags,
      '--allow-natives-syntax',
      '--input-type=module',
      '-e',
      `await import(${JSON.stringify(specifier)});
       process.stdout.write('\\nfast=' + %HasFastProperties(String.prototype));`,
    ],
    { cwd: ROOT, encoding: 'utf8', timeout: 30_000 },
  );
  expect(out.status, out.stderr).toBe(0);
  // The last line: the confab command prints its usage first.
  return out.stdout.endsWith('\nfast=true');
}

const built = (file: string) => pathToFileURL(path.join(ROOT, 'dist', file)).href;

describe('String.prototype', () => {
  // Without ioredis's effect there is nothing to undo, and a fast prototype proves nothing.
  let ioredisSlowsIt = true;
  beforeAll(() => {
    ioredisSlowsIt = !fastAfterImporting('ioredis');
  });

  it.each([
    ['the server', 'server.js', []],
    ['the confab command', 'cli/main.js', []],
    ['the server, feedback allocated at once', 'server.js', ['--no-lazy-feedback-allocation']],
  ])('is fast once %s is loaded, ioredis included', (_what, file, flags) => {
    if (!ioredisSlowsIt) {
      console.log(
        `skipped: ioredis no longer slows String.prototype on node ${process.version}; the workaround in src/store/ioredis.ts can go`,
      );
      return;
    }
    expect(fastAfterImporting(built(file), flags)).toBe(true);
  });
});
