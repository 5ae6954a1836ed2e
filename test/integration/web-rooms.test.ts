// The web client's rooms, history and resume, in Chromium against a real
// server (docs/protocol.md, "Rooms" and "History and resume").
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConfabServer } from '../../src/server.js';
import { launchChromium } from '../helpers/browser.js';
import { until } from '../helpers/cluster.js';
import { makeOperator } from '../helpers/operator-server.js';
import { join, RawClient } from '../helpers/raw-client.js';
import { ROOT, startConfab } from '../helpers/servers.js';
import { TcpRelay } from '../helpers/tcp-relay.js';
import { joinAs, openPage as openWatchedPage, say } from '../helpers/web-page.js';

const ARTIFACTS = path.join(ROOT, 'test-results');

let browser: Browser;

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
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
  childElementCount: number;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement>;
  parentElement: PageElement | null;
  getBoundingClientRect(): { top: number; bottom: number };
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
interface PageStorage {
  setItem(key: string, value: string): void;
}
declare const CloseEvent: new (type: string, init: { code: number }) => unknown;
declare function getComputedStyle(element: unknown): { opacity: string };

/** Every WebSocket the page opens, kept on window.sockets so a test can cut one. */
const RECORD_SOCKETS = `{
  const Native = WebSocket;
  window.sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); window.sockets.push(this); }
  };
}`;

/** A page that records its WebSockets (`window.sockets`); see openWatchedPage. */
const openPage = (port: number) =>
  openWatchedPage(browser, port, (page) => page.addInitScript({ content: RECORD_SOCKETS }));

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

/**
 * A server with memory history (and `flags`), and `restart`, which starts it anew on the same
 * TCP and HTTP ports, with the same flags: a restart the page reconnects across.
 */
async function restartable(flags: Record<string, string> = {}) {
  const first = await startConfab({ 'http-port': '0', history: 'memory', ...flags });
  const port = first.address.port;
  const httpPort = first.httpAddress!.port;
  const restart = () =>
    startConfab({ port: String(port), 'http-port': String(httpPort), history: 'memory', ...flags });
  return { first, port, httpPort, restart };
}

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

/**
 * Every line of a room's view in the order shown, without its time: a chat as "from: text",
 * any other line as its text.
 */
function shownLines(page: Page, room: string): Promise<string[]> {
  return page.evaluate(
    (r) =>
      [...document.querySelectorAll(`ol.messages[data-room="${r}"] li`)].map((li) => {
        const nick = li.querySelector('.nick')?.textContent ?? '';
        const whole = li.textContent ?? '';
        const time = li.querySelector('time')?.textContent ?? '';
        const text = whole.slice(time.length + nick.length);
        return nick === '' ? text : `${nick}: ${text}`;
      }),
    room,
  );
}

/**
 * Sends a line from the composer and reads the line it shows in the same task, before
 * anything else can change it: the marks it carries (waiting, sent, not sent) and its opacity.
 */
function typeAndRead(page: Page, text: string): Promise<{ marks: string[]; opacity: string }> {
  return page.evaluate((t) => {
    const input = document.querySelector('#input') as unknown as { value: string };
    input.value = t;
    (document.querySelector('#composer') as unknown as { requestSubmit(): void }).requestSubmit();
    const mine = [...document.querySelectorAll('#messages li.msg.mine')];
    const li = mine[mine.length - 1]!;
    return {
      marks: [...li.querySelectorAll('.queued, .not-sent')].map((m) => m.textContent ?? ''),
      opacity: getComputedStyle(li).opacity,
    };
  }, text);
}

/** The marks of the reader's own line that holds `text`, as `typeAndRead` reads them. */
function marksOf(page: Page, text: string): Promise<string[]> {
  return page
    .locator('#messages li.msg.mine', { hasText: text })
    .locator('.queued, .not-sent')
    .allTextContents();
}

/** Every line of every room's view, for checking what a page never saw. */
function allText(page: Page): Promise<string> {
  return page.evaluate(() =>
    [...document.querySelectorAll('ol.messages li')].map((li) => li.textContent).join('\n'),
  );
}

/** The ids of a room's stored lines, in the order shown. */
function storedIds(page: Page, room: string): Promise<number[]> {
  return page.evaluate(
    (r) =>
      [...document.querySelectorAll(`ol.messages[data-room="${r}"] li[data-id]`)].map((li) =>
        Number(li.dataset.id),
      ),
    room,
  );
}

/** The texts of the chats a client receives, up to and including `last`. */
async function chatsUntil(client: RawClient, last: string): Promise<unknown[]> {
  const seen: unknown[] = [];
  for (let i = 0; i < 1000; i++) {
    const m = await client.expect('70');
    seen.push(m.msg);
    if (m.msg === last) return seen;
  }
  throw new Error(`no "${last}" among ${seen.length} chats`);
}

/**
 * A server keeping history in memory whose lobby holds `count` chats from "talker" (`early 0`,
 * …), as the page shows them (`all`), and a page not joined yet; `close` ends all three.
 */
async function earlyChats(count: number, flags: Record<string, string> = {}) {
  const server = await startConfab({
    'http-port': '0',
    history: 'memory',
    'rate-limit': '0',
    ...flags,
  });
  const page = await openPage(server.httpAddress!.port);
  const talker = await join(server.address.port, 'talker');
  const close = async () => {
    talker.close();
    await page.close();
    await server.stop();
  };
  try {
    for (let i = 0; i < count; i++) talker.sendPy({ cmd: '7', msg: `early ${i}` });
    talker.sendPy({ cmd: '1' });
    await talker.expect('10');
  } catch (err) {
    await close();
    throw err;
  }
  const all = Array.from({ length: count }, (_, i) => `talker: early ${i}`);
  return { page, all, close };
}

/**
 * One browser profile (its tabs share localStorage, each has its own sessionStorage) at
 * `server`'s web app, and a client "watcher" in its lobby.
 */
async function browserProfile(server: ConfabServer) {
  const context = await browser.newContext();
  // Its caps let it become an operator.
  const watcher = await join(server.address.port, 'watcher', { caps: ['rooms', 'history'] });
  const url = `http://127.0.0.1:${server.httpAddress!.port}/`;
  return {
    context,
    watcher,
    url,
    /** A new tab at the web app. */
    async open(): Promise<Page> {
      const page = await context.newPage();
      await page.goto(url);
      return page;
    },
    /** The lobby's members, by the watcher's USERS. */
    async users(): Promise<string[]> {
      watcher.sendPy({ cmd: '1' });
      return ((await watcher.expect('10')).users as string[][]).map((u) => u[0]!).sort();
    },
    async close(): Promise<void> {
      watcher.close();
      await context.close();
    },
  };
}

/**
 * The page asks for a nickname, and still does half a second later: it came back as nobody
 * (a page coming back shows the card too, while it connects).
 */
async function asksNickname(page: Page): Promise<void> {
  await page.locator('#nickname').waitFor();
  await page.waitForTimeout(500);
  expect(await page.locator('#join').isVisible()).toBe(true);
  expect(await page.locator('#status').getAttribute('data-status')).toBe('offline');
}

/** The page came back by itself as `nickname`, a new session in a fresh page. */
async function cameBackAs(page: Page, nickname: string): Promise<void> {
  await page.locator('#status[data-status="online"]').waitFor();
  expect(await page.isHidden('#join')).toBe(true);
  await page.locator('#messages li', { hasText: `Welcome, ${nickname}!` }).waitFor();
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
      // Typed as IRC users do.
      await say(bea, '/join maths');
      await bea.locator('#messages[data-room="maths"]').waitFor();
      expect(await bea.getAttribute('.room-button[aria-current="true"]', 'data-room')).toBe(
        'maths',
      );
      await say(bea, '\\join maths');
      await seeLine(bea, 'maths', 'You are already in #maths.');
      // Another room's members, asked for as IRC users do.
      await say(bea, '/names #lobby');
      await seeLine(bea, 'maths', /3 in #lobby: ann, bea, tcp/);
      // A refused line is said why, and kept to be fixed.
      await say(bea, '/lol that was funny');
      await seeLine(bea, 'maths', /Unknown command \/lol\./);
      expect(await bea.inputValue('#input')).toBe('/lol that was funny');
      await bea.fill('#input', '');

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
      await ann.screenshot({ path: path.join(ARTIFACTS, 'web-rooms-desktop.png') });
      await ann.setViewportSize({ width: 390, height: 760 });
      await ann.screenshot({ path: path.join(ARTIFACTS, 'web-rooms-phone.png') });
      await ann.setViewportSize({ width: 1100, height: 700 });
      await ann.click('.room-button[data-room="lobby"]');
      expect(await ann.isHidden('.room-button[data-room="lobby"] .unread')).toBe(true);
      expect(await ann.textContent('#room-title')).toBe('# lobby');
      await say(ann, 'hi tcp');
      expect(await tcp.expect('70')).toEqual({ cmd: '70', from: 'ann', msg: 'hi tcp' });
      // IRC's /me: a client without "actions", as the course client, gets it between asterisks.
      await say(ann, '/me waves at tcp');
      expect(await tcp.expect('70')).toEqual({ cmd: '70', from: 'ann', msg: '*waves at tcp*' });
      await seeLine(ann, 'lobby', /\* ann\s*waves at tcp$/);

      // Nothing of physics reached bea while she was not in it.
      expect(await allText(bea)).not.toContain('gravity is weak');
      // bea joins physics: its history comes with it; ann's view and member list follow.
      await enterRoom(bea, 'physics');
      await seeLine(bea, 'physics', /ann\s*gravity is weak/);
      await ann.click('.room-button[data-room="physics"]');
      await seeLine(ann, 'physics', 'bea joined');
      await ann.locator('#member-list button[data-nick="bea"]').waitFor();
      expect(await ann.locator('#member-list button').allTextContents()).toEqual([
        'Aann(you)',
        'Bbea',
      ]);
      await say(bea, 'hello physicists');
      await seeLine(ann, 'physics', /bea\s*hello physicists/);
      await say(bea, '/me waves at the physicists');
      await seeLine(ann, 'physics', /\* bea\s*waves at the physicists/);
      expect(await ann.locator('ol.messages[data-room="physics"] li.action').count()).toBe(1);

      // Nothing of maths reached ann, nothing of any room reached the course client.
      expect(await allText(ann)).not.toContain('pi is irrational');
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
      // A look-alike spelling (a Cyrillic "а"), which only the server's 1016 tells is maths.
      await say(bea, '\\join m\u0430ths');
      await bea.locator('.room-button[data-room="maths"][aria-current="true"]').waitFor();
      // A reason with no room ("bye" is none joined): neither guessed, a room nor a typo.
      await say(bea, '/part bye all');
      await seeLine(bea, 'maths', /You are not in bye\. To leave the room you are typing into/);
      // As IRC users leave a room, saying why.
      await say(bea, '/part #maths bye all');
      await bea.locator('.room-button[data-room="maths"]').waitFor({ state: 'detached' });
      await seeLine(bea, 'lobby', 'Reasons for leaving are not sent');
    } finally {
      tcp?.close();
      await ann.close();
      await bea.close();
    }
  }, 60_000);

  it('lists the rooms it is not in, joins one with a click, and lists it again once left', async () => {
    const page = await openPage(server.httpAddress!.port);
    const tcp = await join(server.address.port, 'keeper', { caps: ['rooms'] });
    try {
      tcp.sendPy({ cmd: '100', room: 'chess' });
      await tcp.expect('101');
      await joinAs(page, 'visitor');
      const listed = page.locator('#more-rooms button[data-join="chess"]');
      await listed.waitFor();
      expect(await listed.textContent()).toBe('# chess1');
      expect(await page.isVisible('#more-rooms-title')).toBe(true);
      await listed.click();
      await page.locator('#messages[data-room="chess"]').waitFor();
      expect(await page.textContent('#room-title')).toBe('# chess');
      expect(await listed.count()).toBe(0);
      await page.click('#room-list button[data-leave="chess"]');
      await listed.waitFor();
      expect(await listed.textContent()).toBe('# chess1');
    } finally {
      tcp.close();
      await page.close();
    }
  }, 30_000);

  it('on a phone, scrolls only the strip of rooms sideways, however many rooms or how long their names', async () => {
    // Its own server: the rooms it joins from this address would spend the request budget of
    // the tests after it.
    const own = await startConfab({ 'http-port': '0' });
    const page = await openPage(own.httpAddress!.port);
    try {
      await page.setViewportSize({ width: 390, height: 760 });
      await joinAs(page, 'pocket');
      for (const room of ['physics', 'maths', 'chem', 'bio', 'art', 'music', 'y'.repeat(64)])
        await enterRoom(page, room);
      const widths = await page.evaluate(() => [
        (document as unknown as { documentElement: { scrollWidth: number } }).documentElement
          .scrollWidth,
        (globalThis as unknown as { innerWidth: number }).innerWidth,
      ]);
      expect(widths[0]).toBe(widths[1]);
      const strip = await page.$eval('.rooms', (el) => {
        const box = el as unknown as { scrollWidth: number; clientWidth: number };
        return box.scrollWidth > box.clientWidth;
      });
      expect(strip).toBe(true);
    } finally {
      await page.close();
      await own.stop();
    }
  }, 30_000);

  it('finds a room the list leaves out by what is typed in the room box, rooms with people first', async () => {
    const page = await openPage(server.httpAddress!.port);
    // Two members make 34 rooms and stay in them; two members are in one made last.
    const makers = [
      await join(server.address.port, 'maker', { caps: ['rooms'] }),
      await join(server.address.port, 'maker2', { caps: ['rooms'] }),
    ];
    const ann = await join(server.address.port, 'annie', { caps: ['rooms'] });
    const bob = await join(server.address.port, 'bobby', { caps: ['rooms'] });
    try {
      for (let i = 0; i < 34; i++) {
        const maker = makers[i < 17 ? 0 : 1]!;
        maker.sendPy({ cmd: '100', room: `help-${String(i).padStart(2, '0')}` });
        await maker.expect('101');
      }
      ann.sendPy({ cmd: '100', room: 'homework' });
      await ann.expect('101');
      bob.sendPy({ cmd: '100', room: 'homework' });
      await bob.expect('101');
      await joinAs(page, 'visitor');
      const first = page.locator('#more-rooms button[data-join]').first();
      await first.waitFor();
      expect(await first.getAttribute('data-join')).toBe('homework');
      const shown = page.locator('#more-rooms button[data-join]');
      const names = () => shown.evaluateAll((b) => b.map((e) => e.getAttribute('data-join')));
      // Thirty shown: the last rooms made are not among them.
      expect(await names()).toHaveLength(30);
      expect(await names()).not.toContain('help-33');
      await page.fill('#room-name', 'help-3');
      await page.waitForFunction(
        () => document.querySelectorAll('#more-rooms button[data-join]').length === 4,
      );
      expect(await names()).toEqual(['help-30', 'help-31', 'help-32', 'help-33']);
      // Written as IRC writes rooms, as the list shows them.
      await page.fill('#room-name', '#help-33');
      await page.waitForFunction(
        () => document.querySelectorAll('#more-rooms button[data-join]').length === 1,
      );
      await page.fill('#room-name', '');
      await page.waitForFunction(
        () => document.querySelectorAll('#more-rooms button[data-join]').length === 30,
      );
    } finally {
      for (const maker of makers) maker.close();
      ann.close();
      bob.close();
      await page.close();
    }
  }, 30_000);

  it('marks a line naming its user, and the badge of the room it came in while another was shown', async () => {
    const page = await openPage(server.httpAddress!.port);
    const tcp = await join(server.address.port, 'tom');
    try {
      await joinAs(page, 'mia');
      tcp.sendPy({ cmd: '7', msg: 'a trip to miami' });
      tcp.sendPy({ cmd: '7', msg: 'hi Mia!' });
      await seeLine(page, 'lobby', 'hi Mia!');
      const lobbyLines = 'ol.messages[data-room="lobby"] li.msg';
      expect(await page.locator(`${lobbyLines}.mention`).allTextContents()).toEqual([
        expect.stringContaining('hi Mia!'),
      ]);
      await enterRoom(page, 'garden');
      tcp.sendPy({ cmd: '7', msg: 'plain news' });
      await page.locator('.room-button[data-room="lobby"] .unread:not(.mentioned)').waitFor();
      tcp.sendPy({ cmd: '7', msg: '@mia look' });
      const badge = page.locator('.room-button[data-room="lobby"] .unread.mentioned');
      await badge.waitFor();
      expect(await badge.getAttribute('aria-label')).toBe('2 unread, you were mentioned');
      // Seen, it is no longer told.
      await page.click('.room-button[data-room="lobby"]');
      await page.locator('.room-button[data-room="lobby"] .unread.mentioned').waitFor({
        state: 'detached',
      });
    } finally {
      tcp.close();
      await page.close();
    }
  }, 30_000);

  it('lays out the lines that arrive back to back once, not once per line', async () => {
    const page = await openPage(server.httpAddress!.port);
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Performance.enable');
    const layouts = async () => {
      const { metrics } = (await cdp.send('Performance.getMetrics')) as {
        metrics: { name: string; value: number }[];
      };
      return metrics.find((m) => m.name === 'LayoutCount')!.value;
    };
    // Chats handed to the page's socket in one task, as a flood queues them.
    const deliver = (from: number, n: number) =>
      page.evaluate(
        ({ from, n }) => {
          const socket = window.sockets.at(-1)!;
          for (let i = from; i < from + n; i++)
            socket.onmessage?.({
              data: JSON.stringify({ cmd: '70', from: 'talker', msg: `b${i}` }),
            });
        },
        { from, n },
      );
    try {
      await joinAs(page, 'reader');
      await deliver(0, 1100);
      await seeLine(page, 'lobby', 'b1099');
      const before = await layouts();
      await deliver(1100, 200);
      await seeLine(page, 'lobby', 'b1299');
      // Each line measured whether the reader follows, a layout of the whole list: 200 or more.
      expect((await layouts()) - before).toBeLessThan(20);
      // Still trimmed to the newest 1000, and following them.
      const { lines, last, fromBottom } = await page.$eval('#messages', (el) => ({
        lines: el.childElementCount,
        last: el.lastElementChild?.textContent?.slice(-5),
        fromBottom: el.scrollHeight - el.scrollTop - el.clientHeight,
      }));
      expect(lines).toBe(1000);
      expect(last).toBe('b1299');
      expect(fromBottom).toBeLessThan(40);
    } finally {
      await page.close();
    }
  }, 60_000);
});

/** Cuts the page's WebSocket: closed (the server sees it end) or half-open (it does not). */
async function cut(page: Page, how: 'closed' | 'half-open', ...thenSay: string[]): Promise<void> {
  await page.evaluate(
    ([mode, lines]) => {
      for (const text of lines) {
        // Written on the socket about to be cut (its "71" never reaches the page), or
        // still queued behind the flood limit.
        const input = document.querySelector('#input') as unknown as { value: string };
        input.value = text;
        (
          document.querySelector('#composer') as unknown as { requestSubmit(): void }
        ).requestSubmit();
      }
      const ws = window.sockets.at(-1)!;
      if (mode === 'closed') {
        ws.close();
        return;
      }
      // The page gives up on it as on a dead network, but the server never hears of it.
      const onclose = ws.onclose!;
      ws.onclose = null;
      onclose(new CloseEvent('close', { code: 1006 }));
    },
    [how, thenSay] as const,
  );
}

/**
 * Lines still waiting for their "71", once the acknowledgements on their way
 * have had time to arrive: the others may hear a line before its sender's
 * "71" reaches the page.
 */
async function pendingLines(page: Page): Promise<number> {
  await page
    .waitForFunction(() => document.querySelectorAll('li[data-pending]').length === 0, null, {
      timeout: 5000,
    })
    .catch(() => {});
  return page.locator('li[data-pending]').count();
}

describe('web client history and resume in Chromium', () => {
  for (const how of ['half-open', 'closed'] as const) {
    it(`a page whose WebSocket is cut (${how}) resumes with each missed message exactly once, in order`, async () => {
      const server = await startConfab({ 'http-port': '0', history: 'memory' });
      const page = await openPage(server.httpAddress!.port);
      const writer = await join(server.address.port, 'writer', { caps: ['rooms', 'history'] });
      let tcp: RawClient | undefined;
      try {
        await joinAs(page, 'reader');
        await enterRoom(page, 'physics');
        writer.sendPy({ cmd: '100', room: 'physics' });
        await writer.expect('101');
        tcp = await join(server.address.port, 'tcp');
        writer.sendPy({ cmd: '7', room: 'physics', msg: 'physics 0' });
        tcp.sendPy({ cmd: '7', msg: 'lobby 0' });
        await seeLine(page, 'physics', 'physics 0');
        await seeLine(page, 'lobby', 'lobby 0');
        await page.click('.room-button[data-room="lobby"]');

        await cut(page, how, 'typed as the line went down');
        const N = 20;
        for (let i = 1; i <= N; i++) {
          writer.sendPy({ cmd: '7', room: 'physics', msg: `physics ${i}` });
          tcp.sendPy({ cmd: '7', msg: `lobby ${i}` });
        }
        await page.locator('#status[data-status="online"]').waitFor();
        await seeLine(page, 'physics', `physics ${N}`);
        await seeLine(page, 'lobby', `lobby ${N}`);
        // Sent after the resume, so it reaches the others after anything sent twice would have.
        await say(page, 'after the resume');
        const toWriter = await chatsUntil(writer, 'after the resume');
        const toTcp = await chatsUntil(tcp, 'after the resume');

        const range = (room: string, from: string) =>
          Array.from({ length: N + 1 }, (_, i) => `${from}: ${room} ${i}`);
        expect(await chatLines(page, 'physics')).toEqual(range('physics', 'writer'));
        const lobbyLines = await chatLines(page, 'lobby');
        expect(lobbyLines.filter((l) => l.startsWith('tcp: '))).toEqual(range('lobby', 'tcp'));
        expect(lobbyLines.filter((l) => l.startsWith('reader: '))).toEqual([
          'reader: typed as the line went down',
          'reader: after the resume',
        ]);
        // Stored lines in id order, none still waiting for its "71".
        for (const room of ['lobby', 'physics']) {
          const ids = await storedIds(page, room);
          expect(ids).toEqual([...ids].sort((a, b) => a - b));
          expect(new Set(ids).size).toBe(ids.length);
        }
        expect(await pendingLines(page)).toBe(0);
        // Missed in a room not looked at: counted there.
        expect(await unread(page, 'physics')).toBe(String(N));
        // The line typed at the cut, sent again after it, reached each of the others once.
        for (const seen of [toWriter, toTcp])
          expect(seen.filter((m) => m === 'typed as the line went down')).toHaveLength(1);
        if (how === 'half-open') {
          // Taken back: nobody saw the reader leave or come back.
          expect(tcp.received.filter((m) => m.cmd === '30' || m.cmd === '8')).toEqual([]);
        }
      } finally {
        tcp?.close();
        writer.close();
        await page.close();
        await server.stop();
      }
    }, 60_000);
  }

  it('marks the gap when the server restarted with memory history, and goes on', async () => {
    const first = await startConfab({ 'http-port': '0', history: 'memory' });
    const httpPort = first.httpAddress!.port;
    const page = await openPage(httpPort);
    let again: ConfabServer | undefined;
    try {
      await joinAs(page, 'survivor');
      const tcp = await join(first.address.port, 'tcp');
      tcp.sendPy({ cmd: '7', msg: 'before the restart' });
      await seeLine(page, 'lobby', 'before the restart');
      expect(await page.locator('li.marker').count()).toBe(0);
      await first.stop();
      await page.locator('#status[data-status="reconnecting"]').waitFor();
      again = await startConfab({ 'http-port': String(httpPort), history: 'memory' });
      await page.locator('#status[data-status="online"]').waitFor({ timeout: 20_000 });
      const marker = page.locator('ol.messages[data-room="lobby"] li.marker');
      await marker.waitFor();
      expect(await marker.textContent()).toContain('Some messages could not be recovered');
      expect(await marker.getAttribute('data-reason')).toBe('epoch');
      // The new history starts at id 1 again: not mistaken for the old one's first line.
      const tcp2 = await join(again.address.port, 'tcp2');
      tcp2.sendPy({ cmd: '7', msg: 'after the restart' });
      await seeLine(page, 'lobby', 'after the restart');
      expect(await chatLines(page, 'lobby')).toEqual([
        'tcp: before the restart',
        'tcp2: after the restart',
      ]);
      tcp2.close();
    } finally {
      await page.close();
      await again?.stop();
      await first.stop();
    }
  }, 60_000);

  it('shows history on join and loads older messages when scrolled to the top', async () => {
    const server = await startConfab({ 'http-port': '0', history: 'memory', 'rate-limit': '0' });
    const page = await openPage(server.httpAddress!.port);
    const talker = await join(server.address.port, 'talker');
    try {
      const N = 130;
      for (let i = 0; i < N; i++) talker.sendPy({ cmd: '7', msg: `old ${i}` });
      talker.sendPy({ cmd: '1' });
      await talker.expect('10');
      await joinAs(page, 'latecomer');
      const all = Array.from({ length: N }, (_, i) => `talker: old ${i}`);
      // The newest 50 follow the lobby's "101".
      await seeLine(page, 'lobby', 'old 129');
      expect(await chatLines(page, 'lobby')).toEqual(all.slice(N - 50));
      // Shown as history, as the terminal shows it (dimmed).
      expect(await page.locator('#messages li.msg.history').count()).toBe(50);

      for (const [shown, first] of [
        [100, 'old 30'],
        [N, 'old 0'],
      ] as const) {
        // The line on top before loading, as an element: a locator would find the new top.
        const anchor = (await page.locator('#messages li.msg').first().elementHandle())!;
        // Measured as the reader reaches the top, before the answer can arrive.
        const before = await anchor.evaluate((el) => {
          el.parentElement!.scrollTop = 0;
          return el.getBoundingClientRect().top;
        });
        await seeLine(page, 'lobby', new RegExp(`talker\\s*${first}$`));
        expect(await chatLines(page, 'lobby')).toEqual(all.slice(N - shown));
        // What the reader was looking at stays where it was.
        expect(
          Math.abs((await anchor.evaluate((el) => el.getBoundingClientRect().top)) - before),
        ).toBeLessThan(2);
      }
      // Nothing older is stored: scrolling up again asks for nothing more.
      await page.$eval('#messages', (el) => {
        el.scrollTop = 0;
      });
      await say(page, '\\rtt');
      await seeLine(page, 'lobby', /RTT: /);
      expect(await chatLines(page, 'lobby')).toEqual(all);
      expect(await page.locator('#messages li.msg.history').count()).toBe(N);
      // What is said from now on is not history.
      talker.sendPy({ cmd: '7', msg: 'live now' });
      await seeLine(page, 'lobby', 'live now');
      expect(await page.locator('#messages li.msg:not(.history)').allTextContents()).toEqual([
        expect.stringContaining('live now'),
      ]);
    } finally {
      talker.close();
      await page.close();
      await server.stop();
    }
  }, 60_000);

  it('loads older messages with \\history n, wherever the reader is scrolled', async () => {
    const N = 80;
    const { page, all, close } = await earlyChats(N);
    try {
      // A page on a slow machine (a loaded run once showed all 80 lines: an older page asked
      // for while the view looked unfilled).
      const cdp = await page.context().newCDPSession(page);
      await cdp.send('Emulation.setCPUThrottlingRate', { rate: 20 });
      await joinAs(page, 'reader');
      await seeLine(page, 'lobby', 'early 79');
      // Past the view's waits for its history: nothing more was asked for.
      await page.waitForTimeout(1_000);
      expect(await chatLines(page, 'lobby')).toEqual(all.slice(N - 50));
      await cdp.send('Emulation.setCPUThrottlingRate', { rate: 1 });
      await say(page, '\\history 20');
      await seeLine(page, 'lobby', /talker\s*early 10$/);
      expect(await chatLines(page, 'lobby')).toEqual(all.slice(N - 70));
      await say(page, '\\history 100');
      await seeLine(page, 'lobby', /talker\s*early 0$/);
      expect(await chatLines(page, 'lobby')).toEqual(all);
      await say(page, '\\history');
      await seeLine(page, 'lobby', 'Nothing older in #lobby.');
    } finally {
      await close();
    }
  }, 60_000);

  it('loads an older page by itself when the history given on joining does not fill the view, and no more', async () => {
    const N = 80;
    const { page, all, close } = await earlyChats(N, { 'history-on-join': '5' });
    try {
      await joinAs(page, 'reader');
      // Five lines, then a page of 50 before them, which fills the view: no more.
      await seeLine(page, 'lobby', /talker\s*early 25$/);
      await page.waitForTimeout(1_000);
      expect(await chatLines(page, 'lobby')).toEqual(all.slice(N - 55));
    } finally {
      await close();
    }
  }, 60_000);

  it("keeps its welcome, the message of the day and a room's join line below the history they came after", async () => {
    const server = await startConfab({
      'http-port': '0',
      history: 'memory',
      'rate-limit': '0',
      'history-on-join': '5',
      motd: 'Be kind.',
    });
    const page = await openPage(server.httpAddress!.port);
    const talker = await join(server.address.port, 'talker', { caps: ['rooms', 'history'] });
    try {
      talker.sendPy({ cmd: '100', room: 'physics' });
      await talker.expect('101');
      const N = 80;
      for (let i = 0; i < N; i++) {
        talker.sendPy({ cmd: '7', msg: `lobby ${i}` });
        talker.sendPy({ cmd: '7', room: 'physics', msg: `physics ${i}` });
      }
      talker.sendPy({ cmd: '1' });
      await talker.expect('10');
      const said = (room: string) => Array.from({ length: N }, (_, i) => `talker: ${room} ${i}`);
      // Scrolled to the top until the oldest line is in: the five given on joining, the page
      // loaded by itself to fill the view, and the pages before it.
      const loadAll = (room: string) =>
        until(
          `the oldest line of #${room}`,
          async () => {
            const list = page.locator(`ol.messages[data-room="${room}"]`);
            await list.evaluate((el) => {
              el.scrollTop = 0;
            });
            return (await list.locator('li', { hasText: `${room} 0` }).count()) > 0;
          },
          20_000,
        );

      await joinAs(page, 'reader');
      await loadAll('lobby');
      expect(await shownLines(page, 'lobby')).toEqual([
        ...said('lobby'),
        'Welcome, reader! You are the 2nd user. Type \\help for commands.',
        'Be kind.',
      ]);

      await enterRoom(page, 'physics');
      await loadAll('physics');
      expect(await shownLines(page, 'physics')).toEqual([
        ...said('physics'),
        'You joined #physics (2 here).',
      ]);
      // What is said from now on comes below them.
      talker.sendPy({ cmd: '7', room: 'physics', msg: 'live now' });
      await seeLine(page, 'physics', 'live now');
      expect((await shownLines(page, 'physics')).slice(-2)).toEqual([
        'You joined #physics (2 here).',
        'talker: live now',
      ]);
    } finally {
      talker.close();
      await page.close();
      await server.stop();
    }
  }, 60_000);

  it("shows the server's message of the day once, as text, under its welcome", async () => {
    const server = await startConfab({ 'http-port': '0', motd: 'Be kind.\n<b>No</b> spam.' });
    const page = await openPage(server.httpAddress!.port);
    try {
      await joinAs(page, 'reader');
      const motd = page.locator('ol.messages[data-room="lobby"] pre.motd');
      await motd.waitFor();
      expect(await motd.textContent()).toBe('Be kind.\n<b>No</b> spam.');
      expect(await page.locator('ol.messages b').count()).toBe(0);
    } finally {
      await page.close();
      await server.stop();
    }
  }, 30_000);

  it('keeps a message longer than the server takes in the input, and says so, rather than cut it', async () => {
    const server = await startConfab({ 'http-port': '0', 'max-message': '10' });
    const page = await openPage(server.httpAddress!.port);
    const listener = await join(server.address.port, 'listener');
    try {
      await joinAs(page, 'typist');
      await say(page, 'twelve chars');
      await seeLine(page, 'lobby', 'Not sent: the message is 12 characters long; the most is 10.');
      expect(await page.inputValue('#input')).toBe('twelve chars');
      await say(page, 'ten chars!');
      // The first chat it hears: the long one never went.
      expect(await listener.expect('70')).toMatchObject({ from: 'typist', msg: 'ten chars!' });
    } finally {
      listener.close();
      await page.close();
      await server.stop();
    }
  }, 60_000);

  it('sends a pasted page a message per line, in order, keeping what follows the last line break', async () => {
    const server = await startConfab({ 'http-port': '0' });
    const page = await openPage(server.httpAddress!.port);
    const listener = await join(server.address.port, 'listener');
    try {
      await joinAs(page, 'paster');
      await page.fill('#input', 'start: ');
      await page.$eval('#input', (el) => {
        // The page's own classes, which Node's types do not know.
        const page = globalThis as unknown as {
          DataTransfer: new () => { setData(type: string, data: string): void };
          ClipboardEvent: new (type: string, init: object) => unknown;
        };
        const data = new page.DataTransfer();
        data.setData('text/plain', 'line one\r\n\nline two\nline three\nunfinished');
        (el as unknown as { dispatchEvent(event: unknown): boolean }).dispatchEvent(
          new page.ClipboardEvent('paste', { clipboardData: data, cancelable: true }),
        );
      });
      for (const msg of ['start: line one', 'line two', 'line three']) {
        expect(await listener.expect('70')).toMatchObject({ from: 'paster', msg });
      }
      expect(await page.inputValue('#input')).toBe('unfinished');
    } finally {
      listener.close();
      await page.close();
      await server.stop();
    }
  }, 60_000);

  it('lets its user type while it reconnects, and sends it once back', async () => {
    const { first, port, httpPort, restart } = await restartable();
    const page = await openPage(httpPort);
    let again: ConfabServer | undefined;
    let reader: RawClient | undefined;
    try {
      await joinAs(page, 'typer');
      await first.stop();
      await page.locator('#status[data-status="reconnecting"]').waitFor();
      await say(page, 'typed while away');
      await say(page, '\\users');
      await seeLine(page, 'lobby', 'Not connected right now; try again once reconnected.');
      again = await restart();
      await page.locator('#status[data-status="online"]').waitFor({ timeout: 30_000 });
      // Stored once back: a member joining later reads it in the lobby's history.
      await until(
        'the chat to be stored',
        async () => {
          reader?.close();
          reader = await join(port, 'reader', { caps: ['rooms', 'history'] });
          await reader.expect('101');
          await new Promise((resolve) => setTimeout(resolve, 100));
          return reader.received.some((m) => m.cmd === '70' && m.msg === 'typed while away');
        },
        10_000,
      );
      expect(reader!.received.filter((m) => m.cmd === '70').map((m) => m.msg)).toEqual([
        'typed while away',
      ]);
      // Placed where the server stored it, with its time, and said so (as in the terminal).
      const line = page.locator('#messages li.msg', { hasText: 'typed while away' });
      await line.locator('.queued', { hasText: '(sent once reconnected)' }).waitFor();
      const stored = reader!.received.find((m) => m.msg === 'typed while away')!.at as number;
      expect(await line.locator('time').getAttribute('datetime')).toBe(
        new Date(stored).toISOString(),
      );
    } finally {
      reader?.close();
      await page.close();
      await again?.stop();
    }
  }, 60_000);

  it('says in the room on screen that the connection is back, where it said it was lost', async () => {
    const { first, httpPort, restart } = await restartable();
    const page = await openPage(httpPort);
    let again: ConfabServer | undefined;
    try {
      await joinAs(page, 'viewer');
      await enterRoom(page, 'physics');
      await first.stop();
      await seeLine(page, 'physics', 'Connection lost. Reconnecting…');
      again = await restart();
      await page.locator('#status[data-status="online"]').waitFor({ timeout: 30_000 });
      await seeLine(page, 'physics', 'Reconnected as viewer.');
      // The lobby too, where the missed lines it replays follow it.
      await seeLine(page, 'lobby', 'Reconnected as viewer.');
    } finally {
      await page.close();
      await again?.stop();
    }
  }, 60_000);

  it('marks a line typed while it reconnects as waiting from the moment it is typed, until it is sent or not', async () => {
    const { first, httpPort, restart } = await restartable();
    const page = await openPage(httpPort);
    let again: ConfabServer | undefined;
    try {
      await joinAs(page, 'typer');
      await first.stop();
      await page.locator('#status[data-status="reconnecting"]').waitFor();
      // Read as it is typed: said to wait at once, not once the connection is back.
      const typed = await typeAndRead(page, 'typed while away');
      expect(typed.marks).toEqual(['(waiting for the connection)']);
      // Fainter than a line only waiting for its id (0.75).
      expect(Number(typed.opacity)).toBeLessThan(0.75);
      again = await restart();
      await page.locator('#status[data-status="online"]').waitFor({ timeout: 30_000 });
      // Sent: it says so instead, and no longer waits.
      await page
        .locator('#messages li.msg.mine', { hasText: 'typed while away' })
        .locator('.queued', { hasText: '(sent once reconnected)' })
        .waitFor();
      expect(await marksOf(page, 'typed while away')).toEqual(['(sent once reconnected)']);
      const sent = page.locator('#messages li.msg.mine', { hasText: 'typed while away' });
      expect(await sent.evaluate((li) => getComputedStyle(li).opacity)).toBe('1');

      // Given up on (the user left while it waited): not sent, and no longer waiting either.
      await again.stop();
      await page.locator('#status[data-status="reconnecting"]').waitFor();
      expect((await typeAndRead(page, 'typed before leaving')).marks).toEqual([
        '(waiting for the connection)',
      ]);
      await say(page, '\\exit');
      await page.locator('#status[data-status="offline"]').waitFor();
      const left = page.locator('#messages li.msg.mine.failed', {
        hasText: 'typed before leaving',
      });
      await left.waitFor();
      expect(await marksOf(page, 'typed before leaving')).toEqual(['not sent']);
    } finally {
      await page.close();
      await again?.stop();
      await first.stop();
    }
  }, 60_000);

  it('says which lines typed while away were given up with a room it could not join again', async () => {
    const { first, port, httpPort, restart } = await restartable({ 'room-capacity': '1' });
    const relay = await TcpRelay.start(httpPort);
    const page = await openPage(relay.port);
    let again: ConfabServer | undefined;
    let bob: RawClient | undefined;
    try {
      await joinAs(page, 'ann');
      await enterRoom(page, 'r2');
      await first.stop();
      await page.locator('#status[data-status="reconnecting"]').waitFor();
      expect((await typeAndRead(page, 'typed into r2 while away')).marks).toEqual([
        '(waiting for the connection)',
      ]);
      // The page's attempts wait until bob is in.
      relay.hold();
      again = await restart();
      // The room's one place is taken before the page is back.
      bob = await join(port, 'bob', { caps: ['rooms'] });
      bob.sendPy({ cmd: '100', room: 'r2' });
      await bob.expect('101');
      relay.release();
      await page.locator('#status[data-status="online"]').waitFor({ timeout: 30_000 });
      await seeLine(page, 'lobby', 'You are no longer in #r2.');
      // The line's view is gone with the room: its words are not.
      await seeLine(
        page,
        'lobby',
        'Not sent to #\u2068r2\u2069: \u2068typed into r2 while away\u2069',
      );
      // Nothing left of the room: no view, no button, nothing a reload would join again.
      expect(await page.locator('ol.messages[data-room="r2"]').count()).toBe(0);
      expect(await page.locator('.room-button[data-room="r2"]').count()).toBe(0);
    } finally {
      bob?.close();
      await page.close();
      await relay.close();
      await again?.stop();
      await first.stop();
    }
  }, 60_000);

  it('is told of a kick that came while its connection was dead, and does not come back', async () => {
    const server = await startConfab({ 'http-port': '0', history: 'memory' });
    const relay = await TcpRelay.start(server.httpAddress!.port);
    const page = await openPage(relay.port);
    const watcher = await join(server.address.port, 'watcher', {
      caps: ['errors', 'rooms', 'moderation'],
    });
    try {
      await joinAs(page, 'kim');
      await enterRoom(page, 'physics');
      watcher.sendPy({ cmd: '100', room: 'physics' });
      await watcher.expect('101');
      // The page's link dies: the server still holds a connection that reads nothing, and the
      // page's reconnect waits.
      relay.hold();
      relay.strand();
      await page.locator('#status[data-status="reconnecting"]').waitFor();
      await makeOperator(server, watcher);
      watcher.sendPy({ cmd: '94', nickname: 'kim', reason: 'spam' });
      await watcher.expect('99');
      // What the watcher heard before: kim's joins and leaves.
      watcher.received.splice(0);
      relay.release();
      await page.locator('#join-error', { hasText: 'kicked by teacher: spam' }).waitFor();
      expect(await page.getAttribute('#status', 'data-status')).toBe('offline');
      // Not back in any room: the watcher hears no join of kim's.
      watcher.sendPy({ cmd: '1' });
      expect(JSON.stringify(await watcher.expect('10'))).not.toContain('kim');
      expect(watcher.received.filter((m) => m.cmd === '8')).toEqual([]);
    } finally {
      watcher.close();
      await page.close();
      await relay.close();
      await server.stop();
    }
  }, 60_000);

  it('sends one CONNECT for Join pressed again while the server answers it', async () => {
    const server = await startConfab({ 'http-port': '0', history: 'memory' });
    const relay = await TcpRelay.start(server.httpAddress!.port);
    const page = await openPage(relay.port);
    try {
      const sockets: string[] = [];
      const sent: string[] = [];
      page.on('websocket', (ws) => {
        sockets.push(ws.url());
        ws.on('framesent', (frame) => sent.push(String(frame.payload)));
      });
      // Every answer a third of a second late each way: the second press comes while the
      // server's answer to the first CONNECT is on its way.
      relay.slow(300);
      await page.fill('#nickname', 'ann');
      await page.press('#nickname', 'Enter');
      await until('the CONNECT sent', () => sent.some((f) => f.includes('"cmd":"0"')), 10_000);
      await page.press('#nickname', 'Enter');
      await page.locator('#status[data-status="online"]').waitFor({ timeout: 15_000 });
      expect(sockets).toHaveLength(1);
      expect(sent.filter((f) => f.includes('"cmd":"0"'))).toHaveLength(1);
    } finally {
      await page.close();
      await relay.close();
      await server.stop();
    }
  }, 60_000);

  it('gives up a connection that answers nothing, though it never closed, and resumes on a new one', async () => {
    const server = await startConfab({ 'http-port': '0', history: 'memory' });
    const relay = await TcpRelay.start(server.httpAddress!.port);
    const page = await openPage(relay.port);
    const talker = await join(server.address.port, 'talker');
    try {
      await joinAs(page, 'sleeper');
      // The server's replies stop coming, the socket stays open: a laptop's sleep, a Wi-Fi change.
      relay.holdReplies();
      talker.sendPy({ cmd: '7', msg: 'said while it hung' });
      // The page asks its RTT every 10 s and gives up one unanswered for 15: up to 30 s. The
      // log's line, not the status, which may be "reconnecting" for a moment too short to see.
      await page
        .locator('ol.messages[data-room="lobby"] li', { hasText: 'Connection lost. Reconnecting' })
        .waitFor({ state: 'attached', timeout: 60_000 });
      await page.locator('#status[data-status="online"]').waitFor({ timeout: 20_000 });
      await seeLine(page, 'lobby', 'said while it hung');
      expect(
        (await chatLines(page, 'lobby')).filter((l) => l.endsWith('said while it hung')),
      ).toHaveLength(1);
    } finally {
      talker.close();
      await page.close();
      await relay.close();
      await server.stop();
    }
  }, 120_000);

  it('keeps the newest 1000 lines of a busy room, and brings dropped ones back from history', async () => {
    const server = await startConfab({
      'http-port': '0',
      history: 'memory',
      'rate-limit': '0',
      'history-max-messages': '5000',
    });
    const page = await openPage(server.httpAddress!.port);
    const talker = await join(server.address.port, 'talker');
    const tag = (i: number) => `n${String(i).padStart(4, '0')}`;
    const count = () => page.$eval('#messages', (el) => el.childElementCount);
    // The chat lines shown are consecutive, up to the newest: what was their first?
    const consecutiveFrom = async (newest: number) => {
      const lines = await chatLines(page, 'lobby');
      const first = Number(lines[0]!.slice(-4));
      expect(lines).toEqual(
        Array.from({ length: newest - first + 1 }, (_, k) => `talker: ${tag(first + k)}`),
      );
      return first;
    };
    try {
      await joinAs(page, 'reader');
      const N = 1200;
      for (let i = 0; i < N; i++) talker.sendPy({ cmd: '7', msg: tag(i) });
      await seeLine(page, 'lobby', tag(N - 1));
      // Trimmed 50 lines at a time past the 1000.
      expect(await count()).toBeGreaterThanOrEqual(1000);
      expect(await count()).toBeLessThanOrEqual(1050);
      const first = await consecutiveFrom(N - 1);
      expect(first).toBeGreaterThanOrEqual(N - 1050);

      // Scrolled to the top, the reader gets the dropped lines back from history.
      const kept = await count();
      await page.$eval('#messages', (el) => {
        el.scrollTop = 0;
      });
      await seeLine(page, 'lobby', tag(first - 1));
      const older = await consecutiveFrom(N - 1);
      expect(older).toBeLessThan(first);
      const shown = await count();
      expect(shown).toBeGreaterThan(kept);

      // While the reader is up there, new lines do not take away what it reads: up to twice
      // the lines stay, then only those a screenful above its view go.
      // The line in the middle of the view: what the reader is reading.
      const firstSeen = () =>
        page.$eval('#messages', (list) => {
          const box = list.getBoundingClientRect();
          const middle = (box.top + box.bottom) / 2;
          for (const li of list.querySelectorAll('li.msg')) {
            const r = li.getBoundingClientRect();
            if (r.top <= middle && middle < r.bottom) return li.textContent?.slice(-5);
          }
          return undefined;
        });
      const reading = await firstSeen();
      for (let i = N; i < N + 100; i++) talker.sendPy({ cmd: '7', msg: tag(i) });
      await seeLine(page, 'lobby', tag(N + 99));
      expect(await count()).toBe(shown + 100);
      expect(await consecutiveFrom(N + 99)).toBe(older);
      const M = N + 100 + 1000;
      for (let i = N + 100; i < M; i++) talker.sendPy({ cmd: '7', msg: tag(i) });
      await seeLine(page, 'lobby', tag(M - 1));
      expect(await count()).toBeGreaterThan(2050);
      expect(await firstSeen()).toBe(reading);
      const still = await consecutiveFrom(M - 1);
      expect(still).toBeGreaterThan(older);
    } finally {
      talker.close();
      await page.close();
      await server.stop();
    }
  }, 180_000);

  it('keeps the nickname and rooms across a page reload', async () => {
    const server = await startConfab({ 'http-port': '0', history: 'memory' });
    const page = await openPage(server.httpAddress!.port);
    try {
      await joinAs(page, 'reloader');
      await enterRoom(page, 'physics');
      await page.reload();
      await page.locator('#status[data-status="online"]').waitFor();
      expect(await page.isHidden('#join')).toBe(true);
      await page.locator('.room-button[data-room="physics"]').waitFor();
      const peer = await join(server.address.port, 'peer');
      peer.sendPy({ cmd: '1' });
      expect(((await peer.expect('10')).users as string[][]).map((u) => u[0])).toEqual([
        'reloader',
        'peer',
      ]);
      peer.close();
    } finally {
      await page.close();
      await server.stop();
    }
  }, 60_000);

  it('a page opened after the tab was closed comes back as its user, once; \\exit and a kick forget it', async () => {
    // Its own data directory: the ban below is kept there.
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'confab-web-'));
    const server = await startConfab({ 'http-port': '0', history: 'memory', 'data-dir': dataDir });
    const profile = await browserProfile(server);
    const { open, users, watcher } = profile;
    try {
      const first = await open();
      await joinAs(first, 'closer');
      await enterRoom(first, 'physics');
      await say(first, 'before closing');
      await seeLine(first, 'physics', 'before closing');
      // A second tab while the first is open is somebody else.
      const other = await open();
      await asksNickname(other);
      await other.close();
      await first.close();
      await watcher.expect('30');
      expect(await users()).toEqual(['watcher']);

      const back = await open();
      await cameBackAs(back, 'closer');
      await back.locator('.room-button[data-room="physics"]').waitFor();
      await seeLine(back, 'physics', 'before closing');
      expect(await users()).toEqual(['closer', 'watcher']);
      // Taken once: the next tab opened beside it asks for a nickname.
      const beside = await open();
      await asksNickname(beside);
      await beside.close();

      await say(back, '\\exit');
      await back.locator('#nickname').waitFor();
      await watcher.expect('30');
      await back.close();
      const after = await open();
      await asksNickname(after);
      expect(await users()).toEqual(['watcher']);

      // A session the server ended (kicked) is not handed on either.
      await joinAs(after, 'kicked');
      await watcher.expect('8');
      await makeOperator(server, watcher);
      watcher.sendPy({ cmd: '94', nickname: 'kicked' });
      await after.locator('#join-error', { hasText: 'kicked' }).waitFor();
      await after.close();
      const next = await open();
      await asksNickname(next);
      expect(await users()).toEqual(['watcher']);

      // Nor is one the server refuses when it comes back (banned while its tab was closed).
      await joinAs(next, 'banned');
      await watcher.expect('8');
      await next.close();
      await watcher.expect('30');
      watcher.sendPy({ cmd: '95', mask: 'banned' });
      await watcher.expect('98');
      const refused = await open();
      await refused.locator('#join-error', { hasText: 'banned' }).waitFor();
      await refused.close();
      const last = await open();
      await asksNickname(last);
      // It did not try to come back as the banned user.
      expect(await last.textContent('#join-error')).toBe('');
    } finally {
      await profile.close();
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 60_000);

  it('tabs closed at once, and tabs opened at once, each come back as one of them, once', async () => {
    const server = await startConfab({ 'http-port': '0' });
    const profile = await browserProfile(server);
    const names = ['ana', 'ben', 'cy'];
    try {
      const tabs = await Promise.all(names.map(() => profile.open()));
      for (const [i, tab] of tabs.entries()) await joinAs(tab, names[i]!);
      await Promise.all(tabs.map((tab) => tab.close()));
      await until('their leaves', async () => (await profile.users()).length === 1, 10_000);
      const back = await Promise.all([...names, 'extra'].map(() => profile.open()));
      await until(
        'three online',
        async () => {
          const statuses = await Promise.all(
            back.map((tab) => tab.locator('#status').getAttribute('data-status')),
          );
          return statuses.filter((s) => s === 'online').length === 3;
        },
        15_000,
      );
      expect(await profile.users()).toEqual([...names, 'watcher']);
      // The fourth found none left, and asks.
      const offline = [];
      for (const tab of back)
        if ((await tab.locator('#status').getAttribute('data-status')) !== 'online')
          offline.push(tab);
      expect(offline.length).toBe(1);
      await asksNickname(offline[0]!);
      // Not a second taker of one of the three, refused as taken.
      expect(await offline[0]!.textContent('#join-error')).toBe('');
    } finally {
      await profile.close();
      await server.stop();
    }
  }, 60_000);

  it('coming back to a nickname taken meanwhile, the name it suggests keeps the rooms', async () => {
    const server = await startConfab({ 'http-port': '0' });
    const profile = await browserProfile(server);
    let taker: RawClient | undefined;
    try {
      const first = await profile.open();
      await joinAs(first, 'returner');
      await enterRoom(first, 'den');
      await first.close();
      await profile.watcher.expect('30');
      taker = await join(server.address.port, 'returner');
      const back = await profile.open();
      await back.locator('#join-error', { hasText: 'was taken' }).waitFor();
      expect(await back.inputValue('#nickname')).toBe('returner_');
      await back.press('#nickname', 'Enter');
      await back.locator('#status[data-status="online"]').waitFor();
      await back.locator('.room-button[data-room="den"]').waitFor();
    } finally {
      taker?.close();
      await profile.close();
      await server.stop();
    }
  }, 60_000);

  it('a tab reloaded after its page crashed comes back as itself; a tab opened meanwhile does not take it', async () => {
    const server = await startConfab({ 'http-port': '0' });
    const profile = await browserProfile(server);
    const { open, users, watcher } = profile;
    try {
      const tab = await open();
      await joinAs(tab, 'phoenix');
      await tab.locator('.room-button[data-room="lobby"]').waitFor();
      const crashed = tab.waitForEvent('crash');
      const cdp = await profile.context.newCDPSession(tab);
      // Answered by no one: the page's renderer is gone.
      void cdp.send('Page.crash').catch(() => undefined);
      await crashed;
      await watcher.expect('30');
      // Not handed over (no pagehide), and no live page holds it.
      await asksNickname(await open());
      // As the browser's reload button does (Playwright's reload refuses a crashed page).
      // Playwright keeps a crashed page's object dead, so the server is asked.
      await cdp.send('Page.reload');
      await until('phoenix back', async () => (await users()).includes('phoenix'), 15_000);
      expect(await users()).toEqual(['phoenix', 'watcher']);
    } finally {
      await profile.close();
      await server.stop();
    }
  }, 60_000);

  it('a duplicated tab is somebody else; closed tabs come back newest first; a reload is no new tab', async () => {
    const server = await startConfab({ 'http-port': '0' });
    const profile = await browserProfile(server);
    const { open, users, watcher, url } = profile;
    try {
      const first = await open();
      await joinAs(first, 'original');
      // A copy of the tab (its sessionStorage with it), as the browser's "Duplicate" makes.
      const [copy] = await Promise.all([
        profile.context.waitForEvent('page'),
        first.evaluate(() => {
          const page = globalThis as unknown as {
            open(url: string): unknown;
            location: { href: string };
          };
          page.open(page.location.href);
        }),
      ]);
      await copy.locator('#join-error', { hasText: 'another tab' }).waitFor();
      await asksNickname(copy);
      // The same copy in a tab of its own, loading while the first is too busy to answer.
      const storage = await first.evaluate(() => {
        const { sessionStorage } = globalThis as unknown as { sessionStorage: PageStorage };
        return Object.fromEntries(Object.entries(sessionStorage));
      });
      const twin = await profile.context.newPage();
      await twin.addInitScript((entries: Record<string, string>) => {
        const { sessionStorage } = globalThis as unknown as { sessionStorage: PageStorage };
        for (const [key, value] of Object.entries(entries)) sessionStorage.setItem(key, value);
      }, storage);
      const busy = first.evaluate(() => {
        const until = Date.now() + 1_500;
        while (Date.now() < until);
      });
      await twin.goto(url);
      await twin.locator('#join-error', { hasText: 'another tab' }).waitFor();
      await busy;
      await twin.close();
      await joinAs(copy, 'duplicate');
      expect(await first.locator('#status').getAttribute('data-status')).toBe('online');
      expect(await users()).toEqual(['duplicate', 'original', 'watcher']);

      await first.close();
      await watcher.expect('30');
      await copy.close();
      await watcher.expect('30');
      const newest = await open();
      await cameBackAs(newest, 'duplicate');
      const older = await open();
      await cameBackAs(older, 'original');
      expect(await users()).toEqual(['duplicate', 'original', 'watcher']);

      // One closed tab waiting: a tab that left and reloads does not become it.
      await newest.close();
      await watcher.expect('30');
      await say(older, '\\exit');
      await older.locator('#nickname').waitFor();
      await older.reload();
      await asksNickname(older);
      await cameBackAs(await open(), 'duplicate');
      expect(await users()).toEqual(['duplicate', 'watcher']);
    } finally {
      await profile.close();
      await server.stop();
    }
  }, 60_000);

  it('coming back to a full lobby ("02"), keeps trying rather than asking for a nickname', async () => {
    const server = await startConfab({ 'http-port': '0', 'max-users': '2' });
    const page = await openPage(server.httpAddress!.port);
    const listener = await join(server.address.port, 'listener');
    let intruder: RawClient | undefined;
    try {
      await joinAs(page, 'returner');
      await listener.expect('8');
      const before = await page.evaluate(() => window.sockets.length);
      await cut(page, 'closed');
      await listener.expect('30');
      // The lobby's last place taken while the page is away: its next attempts meet "02".
      intruder = await join(server.address.port, 'intruder');
      await until(
        'two refused attempts',
        async () => (await page.evaluate(() => window.sockets.length)) >= before + 2,
        15_000,
      );
      expect(await page.locator('#status').getAttribute('data-status')).toBe('reconnecting');
      expect(await page.locator('#nickname').isVisible()).toBe(false);
      intruder.close();
      await page.locator('#status[data-status="online"]').waitFor({ timeout: 20_000 });
      listener.sendPy({ cmd: '1' });
      expect(((await listener.expect('10')).users as string[][]).map((u) => u[0]).sort()).toEqual([
        'listener',
        'returner',
      ]);
    } finally {
      intruder?.close();
      listener.close();
      await page.close();
      await server.stop();
    }
  }, 60_000);

  it('a reload answered "02" (its address out of CONNECTs) keeps trying, and gets its rooms back', async () => {
    // One CONNECT every 5 s after a burst of 10: the reload's first attempt is refused.
    const server = await startConfab({
      'http-port': '0',
      'rate-limit': '2',
      'rate-burst': '10',
      'max-conns-per-ip': '10',
    });
    const page = await openPage(server.httpAddress!.port);
    try {
      await joinAs(page, 'reloader');
      await enterRoom(page, 'den');
      // The rest of the address's CONNECTs spent, as a restart's reconnecting crowd would.
      for (let i = 0; i < 12; i++) {
        const c = await RawClient.open(server.address.port);
        c.sendPy({ cmd: '0', nickname: `crowd${i}` });
        await c.waitFor((m) => m.cmd === '02' || m.cmd === '03', 1, 5_000);
        c.close();
      }
      await page.reload();
      // The card covers the page until it has rejoined, and says why it waits.
      await page.locator('#join-error', { hasText: 'The server is full or busy.' }).waitFor();
      expect(await page.locator('#status').getAttribute('data-status')).toBe('connecting');
      await page.locator('#status[data-status="online"]').waitFor({ timeout: 20_000 });
      await page.locator('ol.messages[data-room="den"]').waitFor({ state: 'attached' });
      expect(await page.locator('#nickname').isVisible()).toBe(false);
    } finally {
      await page.close();
      await server.stop();
    }
  }, 60_000);

  it('sends the chats still queued behind the flood limit once, in order, after a cut', async () => {
    const server = await startConfab({ 'http-port': '0', 'rate-limit': '4', 'rate-burst': '2' });
    const page = await openPage(server.httpAddress!.port);
    const listener = await join(server.address.port, 'listener', { caps: ['rooms', 'history'] });
    try {
      await joinAs(page, 'typist');
      const lines = Array.from({ length: 6 }, (_, i) => `queued ${i}`);
      await cut(page, 'closed', ...lines);
      await page.locator('#status[data-status="online"]').waitFor();
      expect(await chatsUntil(listener, 'queued 5')).toEqual(lines);
      await say(page, 'and then');
      expect(await chatsUntil(listener, 'and then')).toEqual(['and then']);
      await page.locator('#messages li.msg', { hasText: 'and then' }).waitFor();
      expect(await chatLines(page, 'lobby')).toEqual(
        [...lines, 'and then'].map((l) => `typist: ${l}`),
      );
      expect(await pendingLines(page)).toBe(0);
      expect(await page.locator('li.error').allTextContents()).toEqual([]);
    } finally {
      listener.close();
      await page.close();
      await server.stop();
    }
  }, 60_000);
});
