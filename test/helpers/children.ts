import type { ChildProcess } from 'node:child_process';
import { afterAll } from 'vitest';

/**
 * Processes the tests started and that have not exited. A test that times out goes on in
 * the background and never stops what it started: each is killed once its file's tests
 * are over, or when its worker (or a script run with tsx) exits.
 */
const running = new Set<ChildProcess>();

function killRunning(): void {
  for (const child of running) child.kill('SIGKILL');
}

// Only a vitest worker has files whose end to wait for.
if (process.env.VITEST !== undefined) afterAll(killRunning);
process.once('exit', killRunning);

/** `child`, to be killed at the latest when the test file's tests are over. */
export function killedAfterFile<T extends ChildProcess>(child: T): T {
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}
