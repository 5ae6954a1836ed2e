// The web client's rooms, history and resume, in Chromium against a real
// server (docs/protocol.md, "Rooms" and "History and resume").
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConfabServer } from '../../src/server.js';
import { launchChromium } from '../helpers/browser.js';
import { join, type RawClient } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';
import { wsClient } from '../helpers/ws-client.js';

let browser: Browser;

beforeAll(async () => {
  browser = await launchChromium();
}, 30_000);

afterAll(async () => {
  await browser?.close();
});

// The browser globals the functions passed to page.evaluate use: the test
// project compiles for Node, without the DOM library.
interface PageElement {
  textContent: string | null;
  dataset: Record<string, string | undefined>;
  scrollTop: number;
  scrollHeight: number;
  clientHeight: number;
  hidden: boolean;
  querySelector(selector: string): PageElement | null;
  getBoundingClientRect(): { top: number };
}
declare const document: {
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement> & { length: number };
};
declare const window: { sockets: PageSocket[] };
interface PageSocket {
  onclose: ((event: unknown) => void) | null;
  onmessage: ((event: unknown) => void) | null;
  close(): void;
}
declare const CloseEvent: new (type: string, init: { code: number }) => unknown;

/** Every WebSocket the page opens, kept on window.sockets so a test can cut one. */
const RECORD_SOCKETS = `{
  const Native = WebSocket;
  window.sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); window.sockets.push(this); }
  };
}`;

/** Per page: uncaught errors and CSP violations, which fail the test when it closes. */
async function openPage(port: number): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.text().includes('Content Security Policy')) problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('close', () => expect(problems).toEqual([]));
  await page.addInitScript({ content: RECORD_SOCKETS });
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

/** Joins (or makes) a room from the room list's form; it becomes the room typed into. */
async function enterRoom(page: Page, room: string): Promise<void> {
  await page.fill('#room-name', room);
  await page.press('#room-name', 'Enter');
  await page.locator(`#messages[data-room="${room}"]`).waitFor();
}

const seeLine = (page: Page, room: string, text: string | RegExp) =>
  page.locator(`ol.messages[data-room="${room}"] li`, { hasText: text }).last().waitFor({
    state: 'attached',
  });

/** The chat lines of a room's view, as "from: text", in the order shown. */
function chatLines(page: Page, room: string): Promise<string[]> {
  return page.evaluate(
    (r) =>
      [...document.querySelectorAll(`ol.messages[data-room="${r}"] li.msg`)].map((li) => {
        const nick = li.querySelector('.nick')?.textContent ?? '';
        const whole = li.textContent ?? '';
        const time = li.querySelector('time')?.textContent ?? '';
        return `${nick}: ${whole.slice(time.length + nick.length)}`;
      }),
    room,
  );
}

/** Every line of every room's view, for checking what a page never saw. */
function allText(page: Page): Promise<string> {
  return page.evaluate(() =>
    [...document.querySelectorAll('ol.messages li')].map((li) => li.textContent).join('\n'),
  );
}

const unread = (page: Page, room: string) =>
  page.locator(`.room-button[data-room="${room}"] .unread`).textContent();

describe('web client rooms in Chromium', () => {
  let server: ConfabServer;
  beforeAll(async () => {
    server = await startConfab({ 'http-port': '0' });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('two pages in two rooms and the lobby with a course client: each sees only its rooms', async () => {
    const port = server.httpAddress!.port;
    const ann = await openPage(port);
    const bea = await openPage(port);
    let tcp: RawClient | undefined;
    try {
      await joinAs(ann, 'ann');
      await joinAs(bea, 'bea');
      tcp = await join(server.address.port, 'tcp');
      let tcpBytes = 0;
      tcp.socket.on('data', (chunk: Buffer) => {
        tcpBytes += chunk.length;
      });
      await seeLine(ann, 'lobby', 'tcp joined');

      await enterRoom(ann, 'physics');
      expect(await ann.textContent('#room-title')).toBe('# physics');
      await say(bea, '\\join maths');
      await bea.locator('#messages[data-room="maths"]').waitFor();
      expect(await bea.getAttribute('.room-button[aria-current="true"]', 'data-room')).toBe(
        'maths',
      );

      await say(ann, 'gravity is weak');
      await say(bea, 'pi is irrational');
      await seeLine(ann, 'physics', 'gravity is weak');
      await seeLine(bea, 'maths', 'pi is irrational');

      // The course client, in the lobby, talks to both pages' lobby views.
      tcp.sendPy({ cmd: '7', msg: 'hello lobby' });
      await seeLine(ann, 'lobby', /tcp\s*hello lobby/);
      await seeLine(bea, 'lobby', /tcp\s*hello lobby/);
      // Neither page is looking at the lobby: it counts, and selecting it resets the count.
      expect(await unread(ann, 'lobby')).toBe('1');
      await ann.click('.room-button[data-room="lobby"]');
      expect(await ann.isHidden('.room-button[data-room="lobby"] .unread')).toBe(true);
      expect(await ann.textContent('#room-title')).toBe('# lobby');
      await say(ann, 'hi tcp');
      expect(await tcp.expect('70')).toEqual({ cmd: '70', from: 'ann', msg: 'hi tcp' });

      // bea joins physics: ann's physics view and member list follow.
      await enterRoom(bea, 'physics');
      await ann.click('.room-button[data-room="physics"]');
      await seeLine(ann, 'physics', 'bea joined');
      await ann.locator('#member-list button[data-nick="bea"]').waitFor();
      expect(await ann.locator('#member-list button').allTextContents()).toEqual([
        'Aann(you)',
        'Bbea',
      ]);
      await say(bea, 'hello physicists');
      await seeLine(ann, 'physics', /bea\s*hello physicists/);

      // Nothing of maths reached ann, nothing of any room reached the course client.
      expect(await allText(ann)).not.toContain('pi is irrational');
      expect(await allText(bea)).not.toContain('gravity is weak');
      tcp.sendPy({ cmd: '1' });
      await tcp.expect('10');
      for (const m of tcp.received) expect(m.room).toBeUndefined();
      expect(tcp.rawFrames.join('\n')).not.toMatch(/physics|maths|gravity|irrational/);
      // Every message to the course client is one padded 1024-byte write, as before rooms.
      expect(tcpBytes % 1024).toBe(0);
      expect(tcp.rawFrames).toContain('{"cmd":"70","from":"ann","msg":"hi tcp"}');

      // Leaving: the room goes from the list, and the page types into the lobby again.
      await ann.click('button[data-leave="physics"]');
      await ann.locator('.room-button[data-room="physics"]').waitFor({ state: 'detached' });
      expect(await ann.textContent('#room-title')).toBe('# lobby');
      await seeLine(bea, 'physics', 'ann left');
    } finally {
      tcp?.close();
      await ann.close();
      await bea.close();
    }
  }, 60_000);
});
