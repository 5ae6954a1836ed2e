import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConfabServer } from '../../src/server.js';
import { join } from '../helpers/raw-client.js';
import { ROOT, startConfab } from '../helpers/servers.js';

const ARTIFACTS = path.join(ROOT, 'test-results');
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let browser: Browser;
let server: ConfabServer;

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_FLAGS });
  server = await startConfab({ 'http-port': '0' });
}, 30_000);

afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

async function openPage(port: number, width = 1100, height = 700): Promise<Page> {
  const page = await browser.newPage({ viewport: { width, height } });
  const foreign: string[] = [];
  page.on('request', (r) => {
    const url = new URL(r.url());
    if (url.hostname !== '127.0.0.1') foreign.push(r.url());
  });
  page.on('close', () => expect(foreign).toEqual([]));
  await page.goto(`http://127.0.0.1:${port}/`);
  return page;
}

async function joinAs(page: Page, nickname: string): Promise<void> {
  await page.fill('#nickname', nickname);
  await page.press('#nickname', 'Enter');
  await page.locator('#join').waitFor({ state: 'hidden' });
  await page.locator('#status[data-status="online"]').waitFor();
}

async function say(page: Page, text: string): Promise<void> {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

const line = (page: Page, text: string | RegExp) =>
  page.locator('#messages li', { hasText: text }).last().waitFor();

describe('web client in Chromium', () => {
  it('two browsers and a course TCP client chat, whisper and rename together', async () => {
    const port = server.httpAddress!.port;
    const ann = await openPage(port);
    const bea = await openPage(port, 390, 760);
    await joinAs(ann, 'ann');
    await joinAs(bea, 'bea');
    const tcp = await join(server.address.port, 'tcp');
    await line(ann, 'tcp joined (3 users)');
    expect(await ann.locator('#members-count').textContent()).toBe('3');
    expect(await ann.locator('#member-list button').allTextContents()).toEqual([
      'Aann(you)',
      'Bbea',
      'Ttcp',
    ]);

    await say(ann, 'hello from the browser');
    await line(bea, /ann\s*hello from the browser/);
    expect(await tcp.expect('70')).toEqual({
      cmd: '70',
      from: 'ann',
      msg: 'hello from the browser',
    });

    tcp.sendPy({ cmd: '7', msg: 'hello from a terminal' });
    await line(ann, /tcp\s*hello from a terminal/);
    await line(bea, /tcp\s*hello from a terminal/);

    // Whisper with the command, and by clicking a member.
    await say(bea, '\\wh ann just between us');
    await line(ann, /whisper\s*bea\s*just between us/);
    await line(bea, /to ann\s*just between us/);
    await ann.click('#member-list button[data-nick="tcp"]');
    expect(await ann.inputValue('#input')).toBe('\\wh tcp ');
    await ann.type('#input', 'psst, terminal');
    await ann.press('#input', 'Enter');
    expect(await tcp.expect('70')).toEqual({ cmd: '70', from: 'ann', msg: 'psst, terminal' });
    tcp.sendPy({ cmd: '2', to: 'bea', msg: 'back at you' });
    await tcp.expect('22');
    await line(bea, /whisper\s*tcp\s*back at you/);

    // Rename: the others see it, and so does the member list.
    await say(ann, '\\rename anna');
    await line(ann, 'You are now known as anna.');
    await line(bea, 'ann is now known as anna');
    tcp.sendPy({ cmd: '1' });
    expect(((await tcp.expect('10')).users as string[][]).map((u) => u[0]).sort()).toEqual([
      'anna',
      'bea',
      'tcp',
    ]);
    await say(bea, '\\rtt');
    await line(bea, /RTT: \d+\.\d+ ms/);
    await say(bea, '\\dance');
    await line(bea, 'Unknown command \\dance');

    await ann.screenshot({ path: path.join(ARTIFACTS, 'web-desktop.png') });
    await bea.screenshot({ path: path.join(ARTIFACTS, 'web-phone.png') });
    tcp.close();
    await line(ann, 'tcp left (2 users)');
    await ann.close();
    await bea.close();
  }, 40_000);

  it('refuses a taken nickname and lets the user pick another', async () => {
    const port = server.httpAddress!.port;
    const first = await openPage(port);
    await joinAs(first, 'dora');
    const second = await openPage(port);
    await second.fill('#nickname', 'DORA');
    await second.press('#nickname', 'Enter');
    await second.locator('#join-error', { hasText: 'is taken' }).waitFor();
    expect(await second.isVisible('#join-form')).toBe(true);
    await second.fill('#nickname', 'dora2');
    await second.click('#join-form button');
    await second.locator('#join').waitFor({ state: 'hidden' });
    await line(first, 'dora2 joined');
    await first.close();
    await second.close();
  }, 30_000);

  it('says when the room is full, and lets the user try again', async () => {
    const small = await startConfab({ 'http-port': '0', 'max-users': '1' });
    const page = await openPage(small.httpAddress!.port);
    try {
      const occupant = await join(small.address.port, 'occupant');
      await page.fill('#nickname', 'late');
      await page.press('#nickname', 'Enter');
      await page.locator('#join-error', { hasText: 'The room is full' }).waitFor();
      occupant.close();
      for (let i = 0; i < 200 && small.chat.lobby.size > 0; i++)
        await new Promise((r) => setTimeout(r, 10));
      expect(small.chat.lobby.size).toBe(0);
      await page.click('#join-form button');
      await page.locator('#join').waitFor({ state: 'hidden' });
    } finally {
      await page.close();
      await small.stop();
    }
  }, 30_000);

  it('follows new messages at the bottom, but not after the reader scrolls up', async () => {
    const page = await openPage(server.httpAddress!.port, 800, 400);
    await joinAs(page, 'scroller');
    const talker = await join(server.address.port, 'talker');
    const atBottom = () =>
      page.$eval('#messages', (el) => el.scrollHeight - el.scrollTop - el.clientHeight < 5);
    for (let i = 0; i < 40; i++) talker.sendPy({ cmd: '7', msg: `line ${i}` });
    await line(page, 'line 39');
    expect(await atBottom()).toBe(true);
    await page.$eval('#messages', (el) => {
      el.scrollTop = 0;
    });
    talker.sendPy({ cmd: '7', msg: 'while you were reading' });
    await line(page, 'while you were reading');
    expect(await page.$eval('#messages', (el) => el.scrollTop)).toBe(0);
    talker.close();
    await page.close();
  }, 30_000);

  it('reconnects and rejoins after the server restarts', async () => {
    const own = await startConfab({ 'http-port': '0' });
    const httpPort = own.httpAddress!.port;
    const page = await openPage(httpPort);
    try {
      await joinAs(page, 'phoenix');
      await own.stop();
      await page.locator('#status[data-status="reconnecting"]').waitFor();
      const again = await startConfab({ 'http-port': String(httpPort) });
      try {
        await page.locator('#status[data-status="online"]').waitFor({ timeout: 20_000 });
        await line(page, 'Reconnected as phoenix.');
        const peer = await join(again.address.port, 'peer');
        peer.sendPy({ cmd: '1' });
        expect(((await peer.expect('10')).users as string[][]).map((u) => u[0])).toEqual([
          'phoenix',
          'peer',
        ]);
        peer.close();
      } finally {
        await page.close();
        await again.stop();
      }
    } finally {
      await own.stop();
    }
  }, 40_000);
});
