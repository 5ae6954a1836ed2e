import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { MAX_PASSWORD_LENGTH, verifyPassword } from '../../src/password.js';
import { join, RawClient } from '../helpers/raw-client.js';
import { CLI } from '../helpers/servers.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';

const MOD = { caps: ['errors', 'moderation'] };
let dir: string;
let config: string;
let dataDir: string;
let hash: string;
const clients: RawClient[] = [];

/** `confab hash-password` given `password` on stdin: its exit code and output. */
function runHashPassword(
  password: string,
): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'hash-password'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out, err }));
    child.stdin.end(`${password}\n`);
  });
}

async function hashPassword(password: string): Promise<string> {
  const { code, out } = await runHashPassword(password);
  if (code !== 0) throw new Error(`hash-password exited ${code}`);
  return out.trim();
}

async function member(port: number, nickname: string, extra: object = {}): Promise<RawClient> {
  const c = await join(port, nickname, extra);
  clients.push(c);
  return c;
}

async function operator(port: number, nickname = 'op'): Promise<RawClient> {
  const op = await member(port, nickname, MOD);
  op.sendPy({ cmd: '92', name: 'teacher', password: 'open sesame' });
  expect(await op.expect('93')).toEqual({ cmd: '93', name: 'teacher' });
  return op;
}

/** A connection from another loopback address, as a course client would open it. */
async function openFrom(port: number, localAddress: string): Promise<RawClient> {
  const c = await RawClient.open(port, '127.0.0.1', localAddress);
  clients.push(c);
  return c;
}

/** What a WebSocket from `localAddress` meets: open, or the HTTP status that refused it. */
function wsFrom(httpPort: number, localAddress: string): Promise<string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${httpPort}/ws`, { localAddress });
    ws.once('open', () => {
      ws.close();
      resolve('open');
    });
    ws.once('unexpected-response', (_req, res) => {
      resolve(String(res.statusCode));
      ws.terminate();
    });
    ws.once('error', (err) => resolve(`error ${err.message}`));
  });
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'confab-mod-'));
  dataDir = path.join(dir, 'data');
  hash = await hashPassword('open sesame');
  config = path.join(dir, 'confab.yaml');
  writeFileSync(config, `max-users: 10\noperators:\n  - name: teacher\n    password: "${hash}"\n`);
});

afterAll(() => {
  for (const c of clients.splice(0)) c.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('confab hash-password', () => {
  it('prints a scrypt hash that verifies the password and no other', () => {
    expect(hash).toMatch(/^scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    expect(verifyPassword('open sesame', hash)).toBe(true);
    expect(verifyPassword('open sesam', hash)).toBe(false);
  });

  it('refuses a password longer than the server checks', async () => {
    const { code, out, err } = await runHashPassword('x'.repeat(MAX_PASSWORD_LENGTH + 1));
    expect(code).toBe(2);
    expect(out).toBe('');
    expect(err).toBe(
      `confab hash-password: the password is longer than ${MAX_PASSWORD_LENGTH} characters\n`,
    );
  });
});

describe('moderation, server as its own process', () => {
  let server: SpawnedServer;
  beforeAll(async () => {
    server = await spawnServer(['--config', config, '--data-dir', dataDir]);
  });
  afterAll(async () => {
    for (const c of clients.splice(0)) c.close();
    await server.stop();
  });

  it('an operator kicks a course client: it is closed, others get "30", moderation members "99" first', async () => {
    const op = await operator(server.port);
    const course = await member(server.port, 'course');
    const plain = await member(server.port, 'plain');
    const watcher = await member(server.port, 'watcher', { caps: ['moderation'] });
    op.drain();
    course.drain();
    plain.drain();
    op.sendPy({ cmd: '94', nickname: 'course', reason: 'spam' });
    await course.expectClose();
    expect(await watcher.expect('30')).toEqual({ cmd: '30', nickname: 'course', userCount: 3 });
    expect(watcher.drain()).toEqual([
      { cmd: '99', action: 'kick', nickname: 'course', by: 'teacher', reason: 'spam' },
    ]);
    expect(await plain.expect('30')).toEqual({ cmd: '30', nickname: 'course', userCount: 3 });
    // A course client sees only the "30" (an "8" for the last joiner may still be in flight).
    expect(plain.drain().filter((m) => m.cmd !== '8')).toEqual([]);
    // The log comes through a pipe from another process: it may trail what the clients saw.
    await expect.poll(() => server.output()).toMatch(/course was kicked by teacher: spam/);
  });

  it("refuses an operator's KICK of itself, in any spelling of its nickname, and keeps it connected", async () => {
    const op = await operator(server.port, 'op9');
    op.drain();
    // Its case, a zero for its "o", a Cyrillic "о": each is the operator.
    for (const spelling of ['OP9', '0p9', '\u043Ep9']) {
      op.sendPy({ cmd: '94', nickname: spelling, reason: 'oops' });
      expect(await op.expect('90')).toMatchObject({ code: 1002, ref: '94' });
    }
    op.sendPy({ cmd: '1' });
    expect(await op.expect('10')).toMatchObject({ cmd: '10' });
  });

  it("makes the operator's name, in any spelling, no one's nickname: CONNECT and RENAME are refused", async () => {
    // A course client meets the refusal a taken name gets; a client with "errors" is told why.
    for (const spelling of ['teacher', 'TEACHER', 't\u0435acher']) {
      const course = await openFrom(server.port, '127.0.0.1');
      course.sendPy({ cmd: '0', nickname: spelling });
      expect(await course.expect('01')).toEqual({ cmd: '01' });
      await course.expectClose();
    }
    const told = await openFrom(server.port, '127.0.0.1');
    told.sendPy({ cmd: '0', nickname: 'Teacher', caps: ['errors'] });
    expect(await told.expect('90')).toMatchObject({
      code: 1006,
      message: "nickname is an operator's name",
    });
    await told.expectClose();
    const other = await member(server.port, 'notop', MOD);
    other.sendPy({ cmd: '5', newNickname: 'teacher' });
    expect(await other.expect('90')).toMatchObject({ code: 1006, ref: '5' });
    // The operator itself neither: its reconnect after a restart would be refused the name.
    const op = await openFrom(server.port, '127.0.0.8');
    op.sendPy({ cmd: '0', nickname: 'op8', ...MOD });
    await op.expect('03');
    op.sendPy({ cmd: '92', name: 'teacher', password: 'open sesame' });
    await op.expect('93');
    op.sendPy({ cmd: '5', newNickname: 'teacher' });
    expect(await op.expect('90')).toMatchObject({ code: 1006, ref: '5' });
    op.close();
    other.close();
  });

  it('"99" reaches a moderation member before the "30"', async () => {
    const op = (await operator(server.port, 'op2')) as RawClient;
    const victim = await member(server.port, 'victim');
    const watcher = await member(server.port, 'watcher2', { caps: ['moderation'] });
    watcher.drain();
    op.sendPy({ cmd: '94', nickname: 'victim', reason: 'noise' });
    await victim.expectClose();
    await watcher.expect('30');
    // expect() removed the "30"; what preceded it is still in order.
    const rest = watcher.rawFrames.map((f) => JSON.parse(f) as { cmd: string });
    const codes = rest.map((m) => m.cmd);
    expect(codes.indexOf('99')).toBeGreaterThanOrEqual(0);
    expect(codes.indexOf('99')).toBeLessThan(codes.lastIndexOf('30'));
    expect(rest[codes.indexOf('99')]).toEqual({
      cmd: '99',
      action: 'kick',
      nickname: 'victim',
      by: 'teacher',
      reason: 'noise',
    });
  });

  it('a wrong password is refused with 1010 and logged with the address, never the password', async () => {
    const eve = await member(server.port, 'eve', MOD);
    eve.sendPy({ cmd: '92', name: 'teacher', password: 'guess-123' });
    expect(await eve.expect('90')).toMatchObject({ code: 1010, ref: '92' });
    await expect.poll(() => server.output()).toMatch(/failed OPER/);
    const line = server
      .output()
      .split('\n')
      .find((l) => l.includes('failed OPER'))!;
    expect(line).toContain('127.0.0.1');
    // Under a key of its own: `name` is the logger's, which pino-pretty shows as the source.
    const entry = JSON.parse(line) as Record<string, unknown>;
    expect(entry.operName).toBe('teacher');
    expect(entry.name).toBeUndefined();
    expect(server.output()).not.toContain('guess-123');
  });

  it('a ban on 127.0.0.2/32 refuses TCP with "02" and WebSocket with 403, and survives a restart', async () => {
    const op = await operator(server.port, 'op3');
    const before = await openFrom(server.port, '127.0.0.2');
    before.sendPy({ cmd: '0', nickname: 'far' });
    await before.expect('03');
    op.sendPy({ cmd: '95', mask: '127.0.0.2/32', reason: 'trouble' });
    expect(await op.expect('98')).toEqual({
      cmd: '98',
      bans: [{ mask: '127.0.0.2/32', by: 'teacher', reason: 'trouble', expires: null }],
    });
    // The member already connected from there is removed at once.
    await before.expectClose();
    const refused = await openFrom(server.port, '127.0.0.2');
    expect(await refused.expect('02')).toEqual({ cmd: '02' });
    await refused.expectClose();
    expect(await wsFrom(server.httpPort!, '127.0.0.2')).toBe('403');
    expect(await wsFrom(server.httpPort!, '127.0.0.1')).toBe('open');
    expect(JSON.parse(readFileSync(path.join(dataDir, 'bans.json'), 'utf8'))).toMatchObject({
      bans: [{ mask: '127.0.0.2/32' }],
    });

    await server.stop();
    for (const c of clients.splice(0)) c.close();
    server = await spawnServer(['--config', config, '--data-dir', dataDir]);
    const still = await openFrom(server.port, '127.0.0.2');
    expect(await still.expect('02')).toEqual({ cmd: '02' });

    const op2 = await operator(server.port, 'op4');
    op2.sendPy({ cmd: '97' });
    expect(await op2.expect('98')).toMatchObject({ bans: [{ mask: '127.0.0.2/32' }] });
    op2.sendPy({ cmd: '96', mask: '127.0.0.2' });
    expect(await op2.expect('98')).toEqual({ cmd: '98', bans: [], removed: true });
    const back = await openFrom(server.port, '127.0.0.2');
    back.sendPy({ cmd: '0', nickname: 'back' });
    await back.expect('03');
  });

  it('SIGHUP applies a new operator list to new OPERs', async () => {
    const second = await hashPassword('second');
    writeFileSync(
      config,
      `max-users: 10\noperators:\n  - name: teacher\n    password: "${hash}"\n  - name: head\n    password: "${second}"\n`,
    );
    const mark = server.output().length;
    server.child.kill('SIGHUP');
    await expect
      .poll(() => server.output().slice(mark), { timeout: 5000 })
      .toMatch(/now in effect: operators/);
    const c = await member(server.port, 'newop', MOD);
    c.sendPy({ cmd: '92', name: 'head', password: 'second' });
    expect(await c.expect('93')).toEqual({ cmd: '93', name: 'head' });
  });

  it("SIGHUP ends the status proved with an operator's old password, not one whose password stayed", async () => {
    const op = await operator(server.port, 'opkey');
    const reload = async (teacherHash: string) => {
      writeFileSync(
        config,
        `max-users: 10\noperators:\n  - name: teacher\n    password: "${teacherHash}"\n`,
      );
      const mark = server.output().length;
      server.child.kill('SIGHUP');
      await expect
        .poll(() => server.output().slice(mark), { timeout: 5000 })
        .toMatch(/configuration reloaded/);
    };
    // The same stored hash in a rewritten file: still an operator (a kick finds nobody).
    await reload(hash);
    op.sendPy({ cmd: '94', nickname: 'nobody' });
    expect(await op.expect('90')).toMatchObject({ code: 1011 });
    // A new password: the status proved with the old one ends.
    try {
      await reload(await hashPassword('new sesame'));
      expect(await op.expect('90')).toEqual({
        cmd: '90',
        code: 1010,
        message: "you are no longer operator teacher: the server's operators list changed",
      });
      op.sendPy({ cmd: '94', nickname: 'nobody' });
      expect(await op.expect('90')).toMatchObject({ code: 1010, ref: '94' });
    } finally {
      // The tests after this one OPER with the old password.
      await reload(hash);
    }
  });

  it('a timed ban expires by itself', async () => {
    const op = await operator(server.port, 'op5');
    op.sendPy({ cmd: '95', mask: '127.0.0.3', seconds: 2 });
    const ban = (await op.expect('98')) as unknown as { bans: { expires: number }[] };
    expect(ban.bans[0]!.expires).toBeGreaterThan(Date.now() - 5000);
    const refused = await openFrom(server.port, '127.0.0.3');
    expect(await refused.expect('02')).toEqual({ cmd: '02' });
    // Bounded: twenty tries, 300 ms apart, long after the two seconds are over.
    let admittedAt = -1;
    for (let i = 0; i < 20 && admittedAt < 0; i++) {
      await new Promise((r) => setTimeout(r, 300));
      const c = await openFrom(server.port, '127.0.0.3');
      c.sendPy({ cmd: '0', nickname: `late${i}` });
      const reply = await Promise.race([
        c.expect('03').then(() => '03'),
        c.expect('02').then(() => '02'),
      ]);
      if (reply === '03') admittedAt = i;
    }
    expect(admittedAt).toBeGreaterThanOrEqual(0);
  });
});
