import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { CONFAB_VERSION } from '../../src/protocol/version.js';
import type { ConfabServer } from '../../src/server.js';
import { hue, MIN_CONTRAST } from '../../web/src/colors.js';
import { useWebServer } from '../helpers/browser.js';
import { addTeacher } from '../helpers/operator-server.js';
import { join } from '../helpers/raw-client.js';
import { ROOT, startConfab } from '../helpers/servers.js';
import { joinAs, say } from '../helpers/web-page.js';

const ARTIFACTS = path.join(ROOT, 'test-results');

const web = useWebServer();

beforeAll(() => {
  mkdirSync(ARTIFACTS, { recursive: true });
});

/** Per page: CSP violations and uncaught errors so far (checked again when the page closes). */
const problems = new WeakMap<Page, string[]>();

async function openPage(
  port: number,
  width = 1100,
  height = 700,
  before?: (page: Page) => Promise<void>,
): Promise<Page> {
  const page = await web.browser.newPage({ viewport: { width, height } });
  const foreign: string[] = [];
  page.on('request', (r) => {
    const url = new URL(r.url());
    if (url.hostname !== '127.0.0.1') foreign.push(r.url());
  });
  // The server's CSP is strict; anything the app does that it blocks shows up here.
  const blocked: string[] = [];
  problems.set(page, blocked);
  page.on('console', (m) => {
    if (m.text().includes('Content Security Policy')) blocked.push(m.text());
  });
  page.on('pageerror', (e) => blocked.push(String(e)));
  page.on('close', () => {
    expect(foreign).toEqual([]);
    expect(blocked).toEqual([]);
  });
  await before?.(page);
  await page.goto(`http://127.0.0.1:${port}/`);
  return page;
}

const line = (page: Page, text: string | RegExp) =>
  page.locator('#messages li', { hasText: text }).last().waitFor();

describe('web client in Chromium', () => {
  it('two browsers and a course TCP client chat, whisper and rename together', async () => {
    const port = web.server.httpAddress!.port;
    const ann = await openPage(port);
    const bea = await openPage(port, 390, 760);
    await joinAs(ann, 'ann');
    await joinAs(bea, 'bea');
    const tcp = await join(web.server.address.port, 'tcp');
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
    await say(bea, '\\version');
    await line(bea, `Server version 1, web client confab ${CONFAB_VERSION}`);
    await say(bea, '\\dance');
    await line(bea, 'Unknown command \\dance');

    // The longest name fits its row, cut with an ellipsis, whole in its tooltip.
    const long = 'W'.repeat(32);
    const wide = await join(web.server.address.port, long);
    const row = ann.locator(`#member-list button[data-nick="${long}"]`);
    await row.waitFor();
    expect(await row.getAttribute('title')).toBe(long);
    const fits = await row.evaluate((button: { scrollWidth: number; clientWidth: number }) => [
      button.scrollWidth,
      button.clientWidth,
    ]);
    expect(fits[0]).toBeLessThanOrEqual(fits[1]!);
    wide.close();

    tcp.close();
    await line(ann, 'tcp left');
    await ann.close();
    await bea.close();
  }, 40_000);

  it('refuses a taken nickname and lets the user pick another', async () => {
    const port = web.server.httpAddress!.port;
    const first = await openPage(port);
    await joinAs(first, 'dora');
    const second = await openPage(port);
    await second.fill('#nickname', 'DORA');
    await second.press('#nickname', 'Enter');
    await second
      .locator('#join-error', { hasText: 'The nickname “DORA” is taken. Join as DORA_, or pick' })
      .waitFor();
    expect(await second.isVisible('#join-form')).toBe(true);
    expect(await second.inputValue('#nickname')).toBe('DORA_');
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
    const page = await openPage(web.server.httpAddress!.port, 800, 400);
    await joinAs(page, 'scroller');
    const talker = await join(web.server.address.port, 'talker');
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

  it('reconnects and rejoins after the server restarts, and says operator status did not come back', async () => {
    const own = await startConfab({ 'http-port': '0' });
    addTeacher(own);
    const httpPort = own.httpAddress!.port;
    const page = await openPage(httpPort);
    try {
      await joinAs(page, 'phoenix');
      await say(page, '\\oper teacher sesame');
      await line(page, 'You are now operator teacher.');
      await own.stop();
      await page.locator('#status[data-status="reconnecting"]').waitFor();
      const again = await startConfab({ 'http-port': String(httpPort) });
      try {
        await page.locator('#status[data-status="online"]').waitFor({ timeout: 20_000 });
        await line(page, 'Reconnected as phoenix. You are no longer operator teacher');
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

// The few browser globals the functions passed to page.evaluate use: the test
// project compiles for Node, without the DOM library.
interface PageElement {
  textContent: string | null;
  parentElement: PageElement | null;
}
declare const document: {
  title: string;
  querySelectorAll(selector: string): Iterable<PageElement> & { length: number };
  dispatchEvent(event: Event): boolean;
};
declare function getComputedStyle(element: PageElement): { color: string; backgroundColor: string };

/** One nickname per hue 0..359: the colour depends on nothing else, so this covers every colour. */
function nicknamePerHue(): string[] {
  const byHue = new Map<number, string>();
  for (let i = 0; byHue.size < 360 && i < 100_000; i++) {
    const name = `n${i}`;
    const h = hue(name);
    if (!byHue.has(h)) byHue.set(h, name);
  }
  return [...byHue.values()];
}

interface ContrastReport {
  count: number;
  distinct: number;
  min: number;
  failures: string[];
}

/** WCAG contrast of every `.nick` in the log against the first opaque background behind it. */
function nickContrast(page: Page): Promise<ContrastReport> {
  return page.evaluate(() => {
    const rgba = (css: string): number[] => {
      if (!css.startsWith('rgb')) throw new Error(`unexpected colour format ${css}`);
      return css.match(/[\d.]+/g)!.map(Number);
    };
    const luminance = (c: number[]): number => {
      const [r, g, b] = c.slice(0, 3).map((v) => {
        const s = v / 255;
        return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      }) as [number, number, number];
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const background = (el: PageElement | null): number[] => {
      for (; el !== null; el = el.parentElement) {
        const c = rgba(getComputedStyle(el).backgroundColor);
        if ((c[3] ?? 1) === 1) return c;
        if (c[3] !== 0) throw new Error('translucent background: blend it first');
      }
      return [255, 255, 255];
    };
    const nicks = [...document.querySelectorAll('#messages .nick')];
    const colours = new Set<string>();
    const failures: string[] = [];
    let min = Number.POSITIVE_INFINITY;
    for (const nick of nicks) {
      const style = getComputedStyle(nick);
      colours.add(style.color);
      const fg = luminance(rgba(style.color));
      const bg = luminance(background(nick));
      const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
      min = Math.min(min, ratio);
      if (ratio < 4.5) failures.push(`${nick.textContent} ${style.color} ${ratio.toFixed(2)}`);
    }
    return { count: nicks.length, distinct: colours.size, min, failures };
  });
}

describe('web client for people', () => {
  it('colours every nickname hue at WCAG AA contrast, in light and dark', async () => {
    const own = await startConfab({ 'http-port': '0', 'rate-limit': '0' });
    const page = await openPage(own.httpAddress!.port);
    try {
      await joinAs(page, 'palette');
      const names = nicknamePerHue();
      expect(names).toHaveLength(360);
      const painter = await join(own.address.port, 'painter');
      for (const name of names) {
        painter.sendPy({ cmd: '5', newNickname: name });
        painter.sendPy({ cmd: '7', msg: `I am ${name}` });
      }
      await page.waitForFunction(
        (n) => document.querySelectorAll('#messages li.msg').length >= n,
        names.length,
        { timeout: 20_000 },
      );
      // Switching the scheme on the same page also checks that old lines follow it.
      for (const colorScheme of ['light', 'dark'] as const) {
        await page.emulateMedia({ colorScheme });
        const report = await nickContrast(page);
        expect(report.count, colorScheme).toBe(360);
        expect(report.failures, colorScheme).toEqual([]);
        expect(report.min, colorScheme).toBeGreaterThanOrEqual(MIN_CONTRAST);
        // A single safe colour for everyone would pass the above; names must stay told apart.
        expect(report.distinct, colorScheme).toBeGreaterThan(200);
      }
      painter.close();
    } finally {
      await page.close();
      await own.stop();
    }
  }, 60_000);

  it('makes http(s) links clickable, shown as the address they open, and leaves other schemes as text', async () => {
    const page = await openPage(web.server.httpAddress!.port);
    await joinAs(page, 'reader');
    const poster = await join(web.server.address.port, 'poster');
    const text =
      'docs at https://example.com/a?b=1&c=2#top, not javascript:alert(document.domain) ' +
      'nor data:text/html,<img src=x onerror=alert(1)> nor JAVASCRIPT://%0aalert(1); ' +
      'see (HTTP://Example.org/wiki/Foo_(bar)). <b>bold?</b> https://g\u043e\u043egle.com/login end';
    poster.sendPy({ cmd: '7', msg: text });
    const li = page.locator('#messages li.msg', { hasText: 'docs at' }).last();
    await li.waitFor();
    const seen = await li.evaluate((el) => ({
      text: el.textContent ?? '',
      links: [...el.querySelectorAll('a')].map((a) => ({
        href: a.getAttribute('href'),
        dir: a.dir,
        text: a.textContent,
        target: a.target,
        rel: a.rel,
      })),
      elements: [...el.querySelectorAll('*')].map((e) => e.tagName.toLowerCase()),
    }));
    expect(seen.links).toEqual([
      {
        href: 'https://example.com/a?b=1&c=2#top',
        dir: 'ltr',
        text: 'https://example.com/a?b=1&c=2#top',
        target: '_blank',
        rel: 'noopener noreferrer',
      },
      // Shown as the address it opens, not as spelt: a spelling can pass for another.
      {
        href: 'http://example.org/wiki/Foo_(bar)',
        dir: 'ltr',
        text: 'http://example.org/wiki/Foo_(bar)',
        target: '_blank',
        rel: 'noopener noreferrer',
      },
      {
        href: 'https://xn--ggle-55da.com/login',
        dir: 'ltr',
        text: 'https://xn--ggle-55da.com/login',
        target: '_blank',
        rel: 'noopener noreferrer',
      },
    ]);
    // Nothing lost, nothing interpreted: the text reads as sent and the markup stays text.
    const shown = text
      .replace('HTTP://Example.org', 'http://example.org')
      .replace('https://g\u043e\u043egle.com', 'https://xn--ggle-55da.com');
    expect(seen.text.endsWith(`poster${shown}`)).toBe(true);
    expect(seen.elements).toEqual(['time', 'span', 'a', 'a', 'a']);
    poster.close();
    await page.close();
  }, 30_000);

  it('counts unread messages in the title while the tab is hidden', async () => {
    const page = await openPage(web.server.httpAddress!.port);
    await joinAs(page, 'away');
    // Headless Chromium keeps every tab "visible" (a second tab in front or a
    // minimised window changes nothing), so the test stands in for the browser:
    // it overrides visibilityState and fires visibilitychange as a tab switch does.
    const setVisibility = (state: 'hidden' | 'visible') =>
      page.evaluate((s) => {
        Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => s });
        Object.defineProperty(document, 'hidden', {
          configurable: true,
          get: () => s === 'hidden',
        });
        document.dispatchEvent(new Event('visibilitychange'));
      }, state);
    const title = () => page.title();
    expect(await title()).toBe('confab');
    const talker = await join(web.server.address.port, 'talker2');
    await line(page, 'talker2 joined');

    await setVisibility('hidden');
    talker.sendPy({ cmd: '7', msg: 'one' });
    await page.waitForFunction(() => document.title === '(1) confab');
    talker.sendPy({ cmd: '2', to: 'away', msg: 'two, a whisper' });
    talker.sendPy({ cmd: '7', msg: 'three' });
    await page.waitForFunction(() => document.title === '(3) confab');
    // Notices are not messages: a join does not count.
    const other = await join(web.server.address.port, 'other');
    await line(page, 'other joined');
    expect(await title()).toBe('(3) confab');

    await setVisibility('visible');
    expect(await title()).toBe('confab');
    talker.sendPy({ cmd: '7', msg: 'seen at once' });
    await line(page, 'seen at once');
    expect(await title()).toBe('confab');
    other.close();
    talker.close();
    await page.close();
  }, 30_000);

  it('offers "retry now" while reconnecting and marks the member list stale', async () => {
    const own = await startConfab({ 'http-port': '0' });
    const httpPort = own.httpAddress!.port;
    // The page's clock is paused once joined, so the backoff timer never fires:
    // only the button can bring the page back.
    const page = await openPage(httpPort, 1100, 700, (p) => p.clock.install());
    let again: ConfabServer | undefined;
    try {
      await joinAs(page, 'patient');
      await page.locator('#members[data-stale="false"]').waitFor();
      expect(await page.isHidden('#members-stale')).toBe(true);
      expect(await page.isHidden('#retry')).toBe(true);
      await page.clock.pauseAt(Date.now() + 1000);

      await own.stop();
      await page.locator('#status[data-status="reconnecting"]').waitFor();
      await page.locator('#retry:enabled').waitFor();
      await page.locator('#members[data-stale="true"]').waitFor();
      expect(await page.textContent('#members-stale')).toContain('Offline');
      expect(await page.isVisible('#members-stale')).toBe(true);
      expect(await page.getAttribute('#member-list', 'aria-describedby')).toBe('members-stale');
      expect(await page.locator('#member-list button').allTextContents()).toEqual([
        'Ppatient(you)',
      ]);
      await page.screenshot({ path: path.join(ARTIFACTS, 'web-reconnecting.png') });
      await page.setViewportSize({ width: 390, height: 760 });
      await page.emulateMedia({ colorScheme: 'dark' });
      await page.click('#members-toggle');
      await page.screenshot({ path: path.join(ARTIFACTS, 'web-phone-reconnecting-dark.png') });
      await page.setViewportSize({ width: 1100, height: 700 });
      // Let half a minute of backoff and RTT ticks pass against the dead server
      // (openPage fails the test on any page error), then wait for the next retry.
      await page.clock.runFor(30_000);
      await page.locator('#retry:enabled').waitFor();
      expect(problems.get(page)).toEqual([]);

      again = await startConfab({ 'http-port': String(httpPort) });
      const peer = await join(again.address.port, 'peer');
      await page.click('#retry');
      await page.locator('#status[data-status="online"]').waitFor();
      await line(page, 'Reconnected as patient.');
      await page.locator('#members[data-stale="false"]').waitFor();
      expect(await page.isHidden('#members-stale')).toBe(true);
      expect(await page.getAttribute('#member-list', 'aria-describedby')).toBeNull();
      expect(await page.isHidden('#retry')).toBe(true);
      expect(await page.locator('#member-list button').allTextContents()).toEqual([
        'Ppeer',
        'Ppatient(you)',
      ]);
      peer.close();
    } finally {
      await page.close();
      await again?.stop();
      await own.stop();
    }
  }, 40_000);

  it('reconnects at once when the browser says the network is back', async () => {
    const own = await startConfab({ 'http-port': '0' });
    const httpPort = own.httpAddress!.port;
    const page = await openPage(httpPort, 1100, 700, (p) => p.clock.install());
    let again: ConfabServer | undefined;
    try {
      await joinAs(page, 'commuter');
      // Paused: the backoff never runs out, so only the "online" event can reconnect.
      await page.clock.pauseAt(Date.now() + 1000);
      await own.stop();
      await page.locator('#retry:enabled').waitFor();
      again = await startConfab({ 'http-port': String(httpPort) });
      await page.context().setOffline(true);
      await page.context().setOffline(false);
      await page.locator('#status[data-status="online"]').waitFor();
      await page.locator('#members[data-stale="false"]').waitFor();
    } finally {
      await page.close();
      await again?.stop();
      await own.stop();
    }
  }, 40_000);

  it('says on the join card when the server cannot be reached, and Join tries again at once', async () => {
    const own = await startConfab({ 'http-port': '0' });
    const httpPort = own.httpAddress!.port;
    const page = await openPage(httpPort, 1100, 700, async (p) => {
      await p.clock.install();
      // Counts the sockets the app opens, to see that a retry left pending is dropped.
      await p.addInitScript({
        content: `{
          const Native = WebSocket;
          window.socketsOpened = 0;
          window.WebSocket = class extends Native {
            constructor(...args) { super(...args); window.socketsOpened++; }
          };
        }`,
      });
    });
    const socketsOpened = () => page.evaluate('window.socketsOpened');
    let again: ConfabServer | undefined;
    try {
      await page.locator('#nickname').waitFor();
      // Paused, the backoff never runs out: only Join can make the next attempt.
      await page.clock.pauseAt(Date.now() + 1000);
      await own.stop();
      await page.fill('#nickname', 'early');
      await page.press('#nickname', 'Enter');
      await page.locator('#join-error', { hasText: 'Cannot reach the server' }).waitFor();
      expect(await page.isVisible('#join-form')).toBe(true);

      again = await startConfab({ 'http-port': String(httpPort) });
      await page.click('#join-form button');
      await page.locator('#join').waitFor({ state: 'hidden' });
      await page.locator('#status[data-status="online"]').waitFor();
      expect(await socketsOpened()).toBe(2);
      // The retry scheduled before the click, had it survived, would open a third socket now.
      // A second at a time, with the network let in between: the page's own RTT check must
      // hear its answers, or it takes the connection for dead.
      for (let second = 0; second < 30; second++) {
        await page.clock.runFor(1_000);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(await socketsOpened()).toBe(2);
      const peer = await join(again.address.port, 'peer');
      peer.sendPy({ cmd: '1' });
      expect(((await peer.expect('10')).users as string[][]).map((u) => u[0])).toEqual([
        'early',
        'peer',
      ]);
      peer.close();
    } finally {
      await page.close();
      await again?.stop();
      await own.stop();
    }
  }, 40_000);

  it('looks right on a desktop and a phone, light and dark (screenshots)', async () => {
    const port = web.server.httpAddress!.port;
    const desk = await openPage(port, 1100, 700);
    const phone = await openPage(port, 390, 760);
    await joinAs(desk, 'maria');
    const others = await Promise.all(
      ['Priya', 'olu', 'nina'].map((n) => join(web.server.address.port, n)),
    );
    const [priya, olu, nina] = others as [
      (typeof others)[0],
      (typeof others)[0],
      (typeof others)[0],
    ];
    await joinAs(phone, 'diego');
    await say(desk, 'Morning all! Release notes are up: https://example.com/confab/releases/0.2');
    priya.sendPy({ cmd: '7', msg: 'Nice. Does the web client do dark mode now?' });
    olu.sendPy({ cmd: '7', msg: 'It follows the system setting, try it.' });
    nina.sendPy({ cmd: '2', to: 'maria', msg: 'lunch at 12:30?' });
    await say(phone, 'Reading on my phone, links open in a new tab (https://example.org/faq).');
    priya.sendPy({ cmd: '7', msg: 'javascript:alert(1) stays plain text, good.' });
    await line(desk, 'stays plain text');
    await line(phone, 'stays plain text');
    for (const colorScheme of ['light', 'dark'] as const) {
      await desk.emulateMedia({ colorScheme });
      await phone.emulateMedia({ colorScheme });
      await desk.screenshot({ path: path.join(ARTIFACTS, `web-desktop-${colorScheme}.png`) });
      await phone.screenshot({ path: path.join(ARTIFACTS, `web-phone-${colorScheme}.png`) });
    }
    await phone.click('#members-toggle');
    await phone.screenshot({ path: path.join(ARTIFACTS, 'web-phone-members-dark.png') });
    for (const c of others) c.close();
    await desk.close();
    await phone.close();
  }, 30_000);
});
