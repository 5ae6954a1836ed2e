import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import type { ConfabServer } from '../../src/server.js';
import { CLI, startConfab } from '../helpers/servers.js';

/** A private tmux server (its own socket), so nothing else's sessions are touched. */
const SOCKET = `confab-test-${process.pid}`;
const tmux = (...args: string[]) =>
  execFileSync('tmux', ['-L', SOCKET, ...args], { encoding: 'utf8' });
const screen = (escapes = false) =>
  tmux('capture-pane', '-p', ...(escapes ? ['-e'] : []), '-t', 'chat');

async function until(check: () => boolean, what: string, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}; screen:\n${screen()}`);
    await new Promise((r) => setTimeout(r, 30));
  }
}

describe('confab chat in a real terminal', () => {
  let server: ConfabServer;
  beforeAll(async () => {
    server = await startConfab();
  });
  afterAll(async () => {
    try {
      tmux('kill-server');
    } catch {
      // already gone with its last session
    }
    await server.stop();
  });

  it('keeps the typed line intact while messages arrive, colors nicknames, and recalls history', async () => {
    const port = server.address.port;
    tmux(
      'new-session',
      '-d',
      '-s',
      'chat',
      '-x',
      '100',
      '-y',
      '20',
      `env -u NO_COLOR TERM=xterm-256color ${process.execPath} ${CLI} chat ann --port ${port}`,
    );
    await until(() => screen().includes('You are the 1st user'), 'the welcome');
    tmux('send-keys', '-t', 'chat', '-l', 'hello wor');
    await until(() => screen().includes('ann> hello wor'), 'the typed text');

    const bob = await ChatClient.connect({ port, nickname: 'bob' });
    const heard: string[] = [];
    bob.on('chat', (m) => heard.push(m.msg));
    bob.chat('hi ann');
    await bob.whisper('ann', 'a secret');
    await until(() => screen().includes('(whisper) bob: a secret'), 'the whisper');

    const lines = screen().trimEnd().split('\n');
    // The partial input is redrawn below the new messages, not interleaved with them.
    expect(lines.at(-1)).toBe('ann> hello wor');
    expect(lines.some((l) => /^\d\d:\d\d bob: hi ann$/.test(l))).toBe(true);
    expect(lines.some((l) => /^\d\d:\d\d \* bob joined \(2 users\)$/.test(l))).toBe(true);
    // Nicknames are colored on a terminal.
    expect(screen(true)).toMatch(new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m(bob|ann)`));

    tmux('send-keys', '-t', 'chat', '-l', 'ld');
    tmux('send-keys', '-t', 'chat', 'Enter');
    await until(() => heard.includes('hello world'), 'bob to hear the message');
    await until(() => /\d\d:\d\d ann: hello world/.test(screen()), 'the sent message, formatted');

    tmux('send-keys', '-t', 'chat', 'Up');
    await until(
      () => screen().trimEnd().split('\n').at(-1) === 'ann> hello world',
      'history recall',
    );
    tmux('send-keys', '-t', 'chat', 'C-u');

    const left = new Promise((r) => bob.once('leave', r));
    tmux('send-keys', '-t', 'chat', 'C-c');
    expect(await left).toEqual({ nickname: 'ann', userCount: 1 });
    await bob.exit();
  });
});
