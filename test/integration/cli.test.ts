import { execFile } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ChatClient, ChatClientError } from '../../src/client/chat-client.js';
import { envName, optionsMarkdown, SERVE_OPTIONS } from '../../src/config.js';
import { until } from '../helpers/cluster.js';
import { CLI, freePort, ROOT, serveExit } from '../helpers/servers.js';
import { spawnServer, waitFor } from '../helpers/spawn-server.js';

const run = promisify(execFile);

describe('confab serve', () => {
  it('lists every option with its environment variable in --help', async () => {
    const { stdout } = await run(process.execPath, [CLI, 'serve', '--help']);
    for (const name of Object.keys(SERVE_OPTIONS)) {
      expect(stdout).toContain(`--${name}`);
      expect(stdout).toContain(envName(name));
    }
    const top = await run(process.execPath, [CLI, '--help']);
    expect(top.stdout).toContain('confab serve');
  });

  it('keeps the README configuration table in step with the options', () => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    expect(readme).toContain(optionsMarkdown());
  });

  it('names the published package in the README install lines, and keeps the confab command', () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
      name: string;
      bin: Record<string, string>;
    };
    // "confab" on npm is someone else's package: npx confab outside the repo would run it.
    expect(pkg.name).not.toBe('confab');
    expect(Object.keys(pkg.bin)).toEqual(['confab']);
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    expect(readme).toContain(`npm install -g ${pkg.name}`);
    expect(readme).toContain(`npx ${pkg.name} serve`);
  });

  it('reads the config file named by CONFAB_CONFIG, below flags and variables', async () => {
    const file = path.join(tmpdir(), `confab-cli-${process.pid}.yaml`);
    writeFileSync(file, 'max-users: 7\nport: 4000\nmax-message: 80\n');
    const { stdout } = await run(
      process.execPath,
      [CLI, 'serve', '--print-config', '--port', '4001'],
      { env: { ...process.env, CONFAB_CONFIG: file, CONFAB_MAX_USERS: '8' } },
    );
    expect(stdout).toContain('\nport: 4001\n');
    expect(stdout).toContain('\nmax-users: 8\n');
    expect(stdout).toContain('\nmax-message: 80\n');
    rmSync(file);
    const help = await run(process.execPath, [CLI, 'serve', '--help']);
    expect(help.stdout).toContain('--print-config');
  });

  it('rejects a bad value with a clear message and exit code 2', async () => {
    const err = await run(process.execPath, [CLI, 'serve', '--port', 'eighty']).catch((e) => e);
    expect(err.code).toBe(2);
    expect(err.stderr).toContain('--port: expected a whole number');
    const unknown = await run(process.execPath, [CLI, 'serve', '--colour']).catch((e) => e);
    expect(unknown.code).toBe(2);
  });

  it('stops with a clear error for a --data-dir that cannot be made, also inside /proc', async () => {
    // Inside /proc, mkdir answers ENOENT under a directory that exists: Node's recursive
    // mkdir retried that for ever, with the event loop held (SIGTERM did nothing).
    for (const dir of ['/proc/confab-data', '/proc/confab/a/b']) {
      const args = ['--port', '0', '--http-port', 'off', '--data-dir', dir];
      const { code, stderr } = await serveExit(args, 10_000);
      expect(code, dir).toBe(1);
      expect(stderr).toContain(`--data-dir ${dir}: cannot use it (ENOENT`);
    }
  }, 30_000);

  it('says that Redis cannot be reached in one line, with no stack trace in its log', async () => {
    // Nothing listens on this port: the start fails within about 5 s.
    const port = await freePort();
    const args = ['--port', '0', '--http-port', 'off', '--redis', `redis://127.0.0.1:${port}`];
    const { code, stderr, stdout } = await serveExit(args, 20_000);
    expect(code).toBe(1);
    expect(stderr).toMatch(
      /^confab: cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+ \(--redis\): .+\n$/,
    );
    expect(stdout).not.toMatch(/^\s+at /m);
    expect(stdout).not.toContain('ECONNREFUSED');
    // Without a scheme, as the Redis client also takes it: named as given.
    const bare = await serveExit([...args.slice(0, -1), `127.0.0.1:${port}`], 20_000);
    expect(bare.code).toBe(1);
    expect(bare.stderr).toContain(`confab: cannot reach Redis at 127.0.0.1:${port} (--redis): `);
  }, 45_000);

  it('refuses an option file that never ends instead of reading it into memory', async () => {
    const base = ['--port', '0', '--http-port', 'off', '--history', 'memory'];
    const words = await serveExit([...base, '--banned-words', '/dev/zero'], 10_000);
    expect(words.code).toBe(1);
    expect(words.stderr).toContain('cannot read --banned-words /dev/zero (more than 16 MiB)');
    const config = await serveExit([...base, '--config', '/dev/urandom'], 10_000);
    expect(config.stderr).toContain('/dev/urandom: cannot read the config file (more than 1 MiB)');
    expect(config.code).not.toBeNull();
    expect(config.code).not.toBe(0);
  }, 30_000);

  it("logs a lost connection in the course's words, naming what carried it", async () => {
    const server = await spawnServer();
    try {
      const ann = await ChatClient.connect({ port: server.port, nickname: 'ann' });
      const ws = new WebSocket(`ws://127.0.0.1:${server.httpPort}/ws`);
      ws.on('error', () => {});
      await new Promise((resolve) => ws.once('open', resolve));
      ws.send(JSON.stringify({ cmd: '0', nickname: 'web', caps: ['errors'] }));
      await new Promise((resolve) => ws.once('message', resolve));
      // Cut, not left with EXIT: the course's line is for a connection lost.
      ws.terminate();
      ann.destroy();
      await waitFor(
        server.output,
        'The TCP connection to the client (nickname=ann) has been lost.',
      );
      await waitFor(
        server.output,
        'The WebSocket connection to the client (nickname=web) has been lost.',
      );
    } finally {
      await server.stop();
    }
  });

  it('serves chat, takes settings from CONFAB_* variables, and stops cleanly on SIGTERM', async () => {
    const server = await spawnServer([], { CONFAB_MAX_USERS: '1' });
    try {
      const ann = await ChatClient.connect({ port: server.port, nickname: 'ann' });
      const refused = await ChatClient.connect({ port: server.port, nickname: 'bob' }).catch(
        (e) => e,
      );
      expect(refused).toBeInstanceOf(ChatClientError);
      expect(refused.kind).toBe('room-full');
      expect(await ann.version()).toBe('1');
      const closed = new Promise((resolve) => ann.once('close', resolve));
      server.child.kill('SIGTERM');
      const code = await new Promise((resolve) => server.child.once('exit', resolve));
      expect(code).toBe(0);
      await closed;
      expect(server.output()).toContain('Bye bye~');
      expect(server.output()).toContain('ann joined. There are 1 users connected.');
    } finally {
      await server.stop();
    }
  });

  it('logs a leave from the lobby as the course server does, and one from another room naming it', async () => {
    const server = await spawnServer();
    try {
      const ann = await ChatClient.connect({ port: server.port, nickname: 'ann' });
      await ann.join('physics');
      await ann.exit();
      await until('the leave lines', () => server.output().includes('ann left physics.'), 10_000);
      expect(server.output()).toContain('ann left. There are 0 users connected.');
      expect(server.output()).toContain('ann left physics. There are 0 users in physics.');
    } finally {
      await server.stop();
    }
  });

  it('stops on SIGINT too', async () => {
    const server = await spawnServer();
    server.child.kill('SIGINT');
    const code = await new Promise((resolve) => server.child.once('exit', resolve));
    expect(code).toBe(0);
  });

  it('loads banned words from a file', async () => {
    const file = path.join(tmpdir(), `confab-banned-${process.pid}.txt`);
    writeFileSync(file, 'Spoiler\n\n');
    const server = await spawnServer(['--banned-words', file]);
    try {
      const ann = await ChatClient.connect({ port: server.port, nickname: 'ann' });
      const bob = await ChatClient.connect({ port: server.port, nickname: 'bob' });
      const got = new Promise((resolve) => ann.once('chat', resolve));
      bob.chat('i hate professor (allowed here)');
      expect(await got).toMatchObject({ from: 'bob' });
      const left = new Promise((resolve) => ann.once('leave', resolve));
      bob.chat('big SPOILER ahead');
      expect(await left).toEqual({ nickname: 'bob', userCount: 1, room: 'lobby' });
      await ann.exit();
    } finally {
      await server.stop();
      rmSync(file, { force: true });
    }
  });
});
