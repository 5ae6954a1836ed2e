import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { hashPassword, verifyPassword } from '../../src/password.js';
import type { ConfabServer } from '../../src/server.js';
import type { RawClient } from './raw-client.js';
import { startConfab } from './servers.js';

export interface OperatorServer {
  /** The server, once the file's tests run. */
  readonly server: ConfabServer;
  /** Clients the tests opened, closed after them. */
  readonly clients: RawClient[];
  /** Its --data-dir (bans.json), once the file's tests run. */
  readonly dataDir: string;
}

/**
 * One in-process confab for a test file, with a data directory of its own, flood control
 * off and the operator "teacher" (password "sesame"): operators come only from a config
 * file, so this server is given one directly.
 */
export function useOperatorServer(flags: Record<string, string> = {}): OperatorServer {
  const state = { clients: [] as RawClient[] } as {
    server: ConfabServer;
    clients: RawClient[];
    dataDir: string;
  };
  let dataDir: string | undefined;
  beforeAll(async () => {
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'confab-oper-'));
    state.dataDir = dataDir;
    state.server = await startConfab({ 'data-dir': dataDir, 'rate-limit': '0', ...flags });
    addTeacher(state.server);
  });
  afterAll(async () => {
    for (const c of state.clients.splice(0)) c.close();
    await state.server?.stop();
    if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true });
  });
  return state;
}

/**
 * Makes "teacher" (password "sesame") the only operator of `server`, as a config file's
 * `operators` would; anyone operator before is told the list changed.
 */
export function addTeacher(server: ConfabServer): void {
  const stored = hashPassword('sesame');
  server.chat.reconfigure({
    operators: [{ name: 'teacher', verify: (p) => verifyPassword(p, stored) }],
  });
}

/** Gives `server` the operator "teacher" and makes `client`, joined there, that operator. */
export async function makeOperator(server: ConfabServer, client: RawClient): Promise<void> {
  addTeacher(server);
  client.sendPy({ cmd: '92', name: 'teacher', password: 'sesame' });
  await client.expect('93');
}
