/**
 * The suite's set-up: one directory for every test server's --data-dir (helpers/servers.ts
 * ownDataDir), removed once the run ends, however its workers ended.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export default function setup(): () => void {
  const root = mkdtempSync(path.join(os.tmpdir(), 'confab-test-data-'));
  process.env.CONFAB_TEST_DATA_DIRS = root;
  return () => rmSync(root, { recursive: true, force: true });
}
