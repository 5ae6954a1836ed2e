/**
 * One server alone on a --data-dir locks it, whatever its history: two would each rewrite
 * bans.json whole from their own list, and a ban one had acknowledged would be lost. The lock
 * goes with the server that held it, when it stops or fails to start. (Servers in other
 * processes: integration/history, "says so when history.db was restored…".)
 */
import {
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ConfabServer } from '../../src/server.js';
import { FileLock } from '../../src/store/file-lock.js';
import { until } from '../helpers/cluster.js';
import { heldByAnother } from '../helpers/lock-held.js';
import { makeOperator } from '../helpers/operator-server.js';
import { join, type RawClient } from '../helpers/raw-client.js';
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

  it('locks it again when its lock file is removed while it runs, so a later start is still refused', async () => {
    const dir = ownDataDir();
    const lockFile = path.join(dir, 'confab.lock');
    const first = await startConfab({ 'data-dir': dir, history: 'off' });
    try {
      // As a stale-lock cleanup or a tmp cleaner would.
      rmSync(lockFile);
      await until('the lock file made again', () => existsSync(lockFile), 10_000);
      await expect(startConfab({ 'data-dir': dir, history: 'off' })).rejects.toThrow(
        'another confab is using it (confab.lock is held)',
      );
    } finally {
      await first.stop();
    }
  });

  it('saves no bans once another server held its data dir, says so, and keeps the lock once that one goes', async () => {
    const dir = ownDataDir();
    const lockFile = path.join(dir, 'confab.lock');
    const bansFile = path.join(dir, 'bans.json');
    const server = await startConfab({ 'data-dir': dir, history: 'off', 'rate-limit': '0' });
    const op = await operatorOf(server);
    let other: FileLock | undefined;
    const unsaved = (why: string) =>
      `the ban list could not be saved (${why}): this change holds only until the server restarts`;
    try {
      // A lock file that cannot be locked (a directory in its place): the cause is told.
      rmSync(lockFile);
      mkdirSync(lockFile);
      op.sendPy({ cmd: '95', mask: 'trent' });
      expect(await op.expect('98')).toMatchObject({
        unsaved: expect.stringMatching(/^the ban list could not be saved \([A-Z_]+\)/),
      });
      rmdirSync(lockFile);
      op.sendPy({ cmd: '95', mask: 'walter' });
      expect(await op.expect('98')).not.toHaveProperty('unsaved');
      // Another server took a new lock file the moment this one's was removed: it writes the
      // list from its own bans.
      rmSync(lockFile);
      other = FileLock.take(lockFile);
      writeFileSync(bansFile, JSON.stringify({ bans: [] }));
      op.sendPy({ cmd: '95', mask: 'mallory' });
      expect(await op.expect('98')).toMatchObject({
        bans: [{ mask: 'trent' }, { mask: 'walter' }, { mask: 'mallory' }],
        unsaved: unsaved('another server used this data dir meanwhile'),
      });
      other.release();
      other = undefined;
      // Gone: the lock is this server's again, and a third is refused, but this one's list
      // still misses what the other wrote, and writes it no more until it restarts.
      await until('the lock taken again', () => heldByAnother(lockFile), 10_000);
      op.sendPy({ cmd: '95', mask: 'eve' });
      expect(await op.expect('98')).toMatchObject({
        unsaved: unsaved('another server used this data dir meanwhile'),
      });
      expect(JSON.parse(readFileSync(bansFile, 'utf8'))).toEqual({ bans: [] });
    } finally {
      op.close();
      other?.release();
      await server.stop();
    }
  });

  it('keeps to the directory it locked when the link it was given is repointed', async () => {
    const base = ownDataDir();
    const [v1, v2, current] = ['v1', 'v2', 'current'].map((n) => path.join(base, n)) as [
      string,
      string,
      string,
    ];
    mkdirSync(v1);
    mkdirSync(v2);
    symlinkSync(v1, current);
    const server = await startConfab({ 'data-dir': current, history: 'off', 'rate-limit': '0' });
    const op = await operatorOf(server);
    try {
      // A blue/green switch: the link now names another directory.
      symlinkSync(v2, `${current}.new`);
      renameSync(`${current}.new`, current);
      op.sendPy({ cmd: '95', mask: 'mallory' });
      expect(await op.expect('98')).not.toHaveProperty('unsaved');
      expect(existsSync(path.join(v1, 'bans.json'))).toBe(true);
      expect(existsSync(path.join(v2, 'bans.json'))).toBe(false);
    } finally {
      op.close();
      await server.stop();
    }
  });
});

/** A client of `server` made operator "teacher". */
async function operatorOf(server: ConfabServer): Promise<RawClient> {
  const op = await join(server.address.port, 'op', { caps: ['errors', 'moderation'] });
  await makeOperator(server, op);
  return op;
}
