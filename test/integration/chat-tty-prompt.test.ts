/**
 * confab chat in a real terminal (tmux) when its prompt changes (\rename, \room, a resume)
 * while a typed line wider than the terminal is on the screen: the line printed with the
 * change stays, and the typed line is redrawn once, under the new prompt. A scripted server
 * holds the rename's "51" until the typed line is on the screen.
 */
import { afterAll, expect, it } from 'vitest';
import { scriptedServer } from '../helpers/scripted-server.js';
import { privateTmux } from '../helpers/tmux.js';

const { tmux, screen, chatAs, kill } = privateTmux('confab-test-prompt');

async function until(check: () => boolean, what: string, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}; screen:\n${screen()}`);
    await new Promise((r) => setTimeout(r, 30));
  }
}

afterAll(() => kill());

it('keeps the line a prompt change prints above a typed line wider than the terminal', async () => {
  let answerRename: (() => void) | undefined;
  const server = await scriptedServer((request, send, socket) => {
    if (request.cmd === '0') {
      send({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1, caps: ['errors', 'rooms'] });
    } else if (request.cmd === '5') {
      answerRename = () => send({ cmd: '51', newNickname: 'w' });
    } else if (request.cmd === '3') socket.end();
  });
  try {
    const long = 'wenceslas-the-long-name';
    await chatAs(long, server.port, { columns: 60 });
    await until(() => screen().replaceAll('\n', '').includes('1st user'), 'the welcome');
    tmux('send-keys', '-t', 'chat', '-l', '\\rename w');
    tmux('send-keys', '-t', 'chat', 'Enter');
    await until(() => answerRename !== undefined, 'the rename request');
    // 25 columns of old prompt and 95 typed take three rows of 60; behind "w> ", two.
    const typed = `x${'0123456789'.repeat(9).slice(0, 85)}abcdefgh.`;
    tmux('send-keys', '-t', 'chat', '-l', typed);
    await until(() => screen().replaceAll('\n', '').includes('abcdefgh.'), 'the typed text');
    answerRename!();
    await until(() => screen().includes('w> '), 'the new prompt');
    const shown = screen();
    expect(shown, shown).toContain('You are now known as w');
    const rows = shown.trimEnd().split('\n');
    const from = rows.findIndex((row) => row.startsWith('w> '));
    expect(rows.slice(from).join(''), shown).toBe(`w> ${typed}`);
    // Nothing of the typed line is left behind the old prompt.
    expect(
      rows.filter((row) => row.startsWith(`${long}> x`)),
      shown,
    ).toHaveLength(0);
    tmux('send-keys', '-t', 'chat', 'C-u');
    tmux('send-keys', '-t', 'chat', 'C-c');
  } finally {
    await server.close();
  }
});
