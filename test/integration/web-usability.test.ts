// The web client for keyboard and screen-reader users, and what it says when things go wrong
// (a refused chat, a nickname lost while away, a long outage), in Chromium against a real
// server.
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import type { ConfabServer } from '../../src/server.js';
import { useWebServer } from '../helpers/browser.js';
import { join } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';
import { joinAs, openPage as openWatchedPage, say } from '../helpers/web-page.js';

const web = useWebServer();

// The browser globals the functions passed to page.evaluate use: the test
// project compiles for Node, without the DOM library.
interface PageElement {
  id: string;
  textContent: string | null;
  scrollTop: number;
  scrollHeight: number;
  clientHeight: number;
  inert: boolean;
  value: string;
  closest(selector: string): PageElement | null;
  requestSubmit(): void;
}
declare const document: {
  activeElement: PageElement | null;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement> & { length: number };
};
declare function getComputedStyle(element: unknown): { textDecorationLine: string };

const openPage = (port: number, before?: (page: Page) => Promise<void>) =>
  openWatchedPage(web.browser, port, before);

const seeLine = (page: Page, text: string | RegExp) =>
  page.locator('#messages li', { hasText: text }).last().waitFor({ state: 'attached' });

/** The texts of the log's chat lines, in the order shown. */
const chatTexts = (page: Page) =>
  page.evaluate(() =>
    [...document.querySelectorAll('#messages li.msg')].map((li) => li.textContent),
  );

/** How many lines of the log match `pattern`. */
const countLines = (page: Page, pattern: RegExp) =>
  page.evaluate(
    (source) =>
      [...document.querySelectorAll('#messages li')].filter((li) =>
        new RegExp(source).test(li.textContent ?? ''),
      ).length,
    pattern.source,
  );

/** Leaves "history" out of the page's CONNECT, as if its server had none. */
const DECLINE_HISTORY = `{
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    const m = JSON.parse(data);
    if (m.cmd === '0') data = JSON.stringify({ ...m, caps: m.caps.filter((c) => c !== 'history') });
    return send.call(this, data);
  };
}`;

const focused = (page: Page) => page.evaluate(() => document.activeElement?.id ?? '');

/**
 * Counts the WebSockets the page opens from now on; with `closeOnWelcome`, each is closed as
 * soon as the server has taken it ("03").
 */
async function countSockets(page: Page, closeOnWelcome = false): Promise<() => number> {
  let opened = 0;
  await page.exposeFunction('noteSocket', () => opened++);
  await page.evaluate((close) => {
    const w = globalThis as unknown as { WebSocket: unknown; noteSocket: () => void };
    const Native = w.WebSocket as new (...a: unknown[]) => WebSocket;
    w.WebSocket = class extends Native {
      constructor(...args: unknown[]) {
        super(...args);
        w.noteSocket();
        if (!close) return;
        this.addEventListener('message', (e: MessageEvent) => {
          if (String(e.data).includes('"03"')) this.close();
        });
      }
    };
  }, closeOnWelcome);
  return () => opened;
}

describe('web client from the keyboard', () => {
  it('scrolls the log with PageUp/PageDown from the composer and loads older history at the top, as in the focusable log', async () => {
    const server = await startConfab({ 'http-port': '0', history: 'memory', 'rate-limit': '0' });
    const page = await openPage(server.httpAddress!.port);
    const talker = await join(server.address.port, 'talker');
    try {
      const N = 130;
      for (let i = 0; i < N; i++) talker.sendPy({ cmd: '7', msg: `old ${i}` });
      talker.sendPy({ cmd: '1' });
      await talker.expect('10');
      await joinAs(page, 'keys');
      await seeLine(page, 'old 129');
      // The newest 50 follow the lobby's "101".
      expect(await page.locator('#messages li.msg').count()).toBe(50);
      expect(await focused(page)).toBe('input');

      const scrollTop = () => page.$eval('#messages', (el) => el.scrollTop);
      const bottom = await scrollTop();
      await page.press('#input', 'PageUp');
      expect(await scrollTop()).toBeLessThan(bottom);
      // PageUp until the top: the next older page loads as if scrolled there.
      for (let i = 0; i < 40 && (await page.locator('#messages li.msg').count()) < 100; i++) {
        await page.press('#input', 'PageUp');
        await new Promise((r) => setTimeout(r, 50));
      }
      await seeLine(page, /talker\s*old 30$/);
      expect(await focused(page)).toBe('input');
      const up = await scrollTop();
      await page.press('#input', 'PageDown');
      expect(await scrollTop()).toBeGreaterThan(up);
      await page.press('#input', 'Control+End');
      expect(await scrollTop()).toBeGreaterThan(bottom);

      // The log itself takes the focus, is named, and scrolls with the keys of any scroller;
      // Home at its top loads the rest.
      expect(await page.getAttribute('#messages', 'tabindex')).toBe('0');
      expect(await page.getAttribute('#messages', 'aria-label')).toBe('Messages in #lobby');
      await page.press('#input', 'Shift+Tab');
      expect(await focused(page)).toBe('messages');
      await page.keyboard.press('Home');
      await seeLine(page, /talker\s*old 0$/);
      expect((await chatTexts(page)).length).toBe(N);
    } finally {
      talker.close();
      await page.close();
      await server.stop();
    }
  }, 60_000);

  it('focuses the nickname on the join card and keeps Tab inside it until joined', async () => {
    const page = await openPage(web.server.httpAddress!.port);
    try {
      expect(await focused(page)).toBe('nickname');
      const behind = () =>
        page.evaluate(() => [
          document.querySelector('header')!.inert,
          document.querySelector('main')!.inert,
        ]);
      expect(await behind()).toEqual([true, true]);
      // Neither way round does Tab reach a control behind the card.
      for (const key of ['Tab', 'Shift+Tab', 'Tab', 'Tab']) {
        await page.keyboard.press(key);
        const outside = await page.evaluate(() => {
          const el = document.activeElement;
          return el !== null && el.closest('header, main') !== null;
        });
        expect(outside, key).toBe(false);
      }
      await joinAs(page, 'tabber');
      expect(await behind()).toEqual([false, false]);
      expect(await focused(page)).toBe('input');
    } finally {
      await page.close();
    }
  }, 30_000);
});

describe('web client when things go wrong', () => {
  // Without "history" a chat gets no "71" and no cid: the page has only its own order to go by.
  for (const caps of ['every capability', 'no history'] as const) {
    const declineHistory = async (page: Page) => {
      if (caps === 'no history') await page.addInitScript({ content: DECLINE_HISTORY });
    };
    it(`marks a chat refused for a banned word as not sent, and says why (${caps})`, async () => {
      const server = await startConfab({ 'http-port': '0' });
      const page = await openPage(server.httpAddress!.port, declineHistory);
      const peer = await join(server.address.port, 'peer');
      try {
        await joinAs(page, 'rude');
        await say(page, 'a fine line');
        expect(await peer.expect('70')).toMatchObject({ from: 'rude', msg: 'a fine line' });
        await say(page, 'well, I hate professor X');
        await page.locator('#status[data-status="offline"]').waitFor();
        const refused = page.locator('#messages li.msg.mine.refused');
        await refused.waitFor();
        expect(await refused.count()).toBe(1);
        expect(await refused.textContent()).toContain('well, I hate professor X');
        expect(await refused.locator('.not-sent').textContent()).toBe('not sent');
        expect(await refused.evaluate((el) => getComputedStyle(el).textDecorationLine)).toContain(
          'line-through',
        );
        // The line before it was delivered, and stays as it was.
        const fine = page.locator('#messages li.msg.mine', { hasText: 'a fine line' });
        expect(await fine.getAttribute('class')).toBe('msg mine');
        // With history the server's "71" gave it its id; without, nothing did.
        expect(await fine.getAttribute('data-id')).toBe(caps === 'no history' ? null : '1');
        await seeLine(page, 'refused for a banned word');
        await page.locator('#join-error', { hasText: 'refused for a banned word' }).waitFor();
      } finally {
        peer.close();
        await page.close();
        await server.stop();
      }
    }, 30_000);

    it(`says a whisper refused for a banned word was not sent, and blames no chat (${caps})`, async () => {
      const server = await startConfab({ 'http-port': '0' });
      const page = await openPage(server.httpAddress!.port, declineHistory);
      const peer = await join(server.address.port, 'peer');
      try {
        await joinAs(page, 'sly');
        await say(page, 'hello all');
        expect(await peer.expect('70')).toMatchObject({ from: 'sly', msg: 'hello all' });
        // A chat right behind the whisper, written before the refusal can come back: the
        // refusal is the whisper's, though that chat is the one still unacknowledged.
        await page.evaluate(() => {
          const input = document.querySelector('#input')!;
          const form = document.querySelector('#composer')!;
          input.value = '\\wh peer I hate professor X';
          form.requestSubmit();
          input.value = 'right behind it';
          form.requestSubmit();
        });
        await seeLine(page, 'Not sent: the whisper contains a banned word.');
        await page.locator('#status[data-status="offline"]').waitFor();
        expect(await page.locator('#messages li.refused').count()).toBe(0);
        expect(await page.locator('#messages li.whisper').count()).toBe(0);
        const hello = page.locator('#messages li.msg.mine', { hasText: 'hello all' });
        expect(await hello.getAttribute('class')).toBe('msg mine');
      } finally {
        peer.close();
        await page.close();
        await server.stop();
      }
    }, 30_000);
  }

  /**
   * A page, its clock installed, on a server of its own: `run` gets them and `restart`, which
   * starts a new server on the same HTTP port. Page and servers are closed after.
   */
  async function onOwnServer(
    run: (page: Page, own: ConfabServer, restart: () => Promise<ConfabServer>) => Promise<void>,
  ): Promise<void> {
    const own = await startConfab({ 'http-port': '0' });
    const httpPort = own.httpAddress!.port;
    const page = await openPage(httpPort, (p) => p.clock.install());
    let again: ConfabServer | undefined;
    try {
      await run(page, own, async () => {
        again = await startConfab({ 'http-port': String(httpPort) });
        return again;
      });
    } finally {
      await page.close();
      await again?.stop();
      await own.stop();
    }
  }

  /**
   * A page joined as `nickname` whose server restarts while someone else takes the name,
   * its clock paused once joined so that the backoff never runs out: the thief is in before
   * the page is back. `then` runs with the page once the thief is in.
   */
  async function nameTakenWhileAway(
    nickname: string,
    then: (page: Page) => Promise<void>,
    away: { rooms?: string[]; meanwhile?: (page: Page) => Promise<void> } = {},
  ): Promise<void> {
    await onOwnServer(async (page, own, restart) => {
      await joinAs(page, nickname);
      for (const room of away.rooms ?? []) {
        await say(page, `\\join ${room}`);
        await page.locator(`ol.messages[data-room="${room}"]`).waitFor({ state: 'attached' });
      }
      await page.clock.pauseAt(Date.now() + 1000);
      await own.stop();
      await page.locator('#retry:enabled').waitFor();
      await away.meanwhile?.(page);
      const again = await restart();
      const thief = await join(again.address.port, nickname);
      try {
        await then(page);
      } finally {
        thief.close();
      }
    });
  }

  it('says so when its nickname was taken while it reconnected, and offers a free one', async () => {
    await nameTakenWhileAway('nina', async (page) => {
      await page.click('#retry');
      await page
        .locator('#join-error', {
          hasText: 'Your nickname nina was taken by someone else while you were disconnected',
        })
        .waitFor();
      await page.locator('#status[data-status="offline"]').waitFor();
      expect(await page.textContent('#status-text')).toBe('Offline');
      expect(await page.isHidden('#retry')).toBe(true);
      expect(await page.inputValue('#nickname')).toBe('nina_');
      expect(await focused(page)).toBe('nickname');
      await page.press('#nickname', 'Enter');
      await page.locator('#join').waitFor({ state: 'hidden' });
      await page.locator('#status[data-status="online"]').waitFor();
      await seeLine(page, 'Welcome, nina_!');
    });
  }, 40_000);

  it('joined under another name after its own was taken, is back in its rooms, its unsent lines kept', async () => {
    const physics = 'ol.messages[data-room="physics"]';
    await nameTakenWhileAway(
      'pia',
      async (page) => {
        await page.click('#retry');
        await page.locator('#join-error', { hasText: 'Your nickname pia was taken' }).waitFor();
        await page.press('#nickname', 'Enter');
        await page.locator('#status[data-status="online"]').waitFor();
        await page
          .locator('ol.messages[data-room="lobby"] li', { hasText: 'Welcome, pia_!' })
          .waitFor({ state: 'attached' });
        // Still shown, and still said not to have been sent (no longer waiting).
        const away = page.locator(`${physics} li.msg.mine`, { hasText: 'typed while away' });
        expect(await away.locator('.queued, .not-sent').allTextContents()).toEqual(['not sent']);
        // In the room on the server too: a chat there is taken.
        await page.click('.room-button[data-room="physics"]');
        await say(page, 'back in physics');
        const back = page.locator(`${physics} li.msg.mine:not([data-pending])`, {
          hasText: 'back in physics',
        });
        await back.waitFor();
        expect(await back.textContent()).not.toContain('not sent');
        // Renaming to the name one has is not renaming to a taken one.
        await say(page, '\\rename pia_');
        await page.locator(`${physics} li.error`, { hasText: 'You are already pia_.' }).waitFor();
      },
      {
        rooms: ['physics'],
        meanwhile: async (page) => {
          // A restart is nothing the user did wrong: said as a notice, not an error.
          await page
            .locator(`${physics} li.notice`, { hasText: 'The server is shutting down.' })
            .waitFor({ state: 'attached' });
          expect(await page.locator(`${physics} li.error`).count()).toBe(0);
          await say(page, 'typed while away');
          const waiting = page.locator(`${physics} li[data-pending]`);
          await waiting.waitFor({ state: 'attached' });
          // Said to wait for the connection, not shown as if sent.
          expect(await waiting.textContent()).toContain('(waiting for the connection)');
        },
      },
    );
  }, 40_000);

  it('says so too when the nickname was taken while the page was reloaded during an outage', async () => {
    await nameTakenWhileAway('omar', async (page) => {
      // The reload comes back as omar by itself (sessionStorage), and finds the name taken.
      await page.reload();
      await page
        .locator('#join-error', {
          hasText: 'Your nickname omar was taken by someone else while you were disconnected',
        })
        .waitFor();
      expect(await page.inputValue('#nickname')).toBe('omar_');
    });
  }, 40_000);

  it('shows the countdown in one status line, and the log only when the connection is lost and back', async () => {
    await onOwnServer(async (page, own, restart) => {
      await joinAs(page, 'steady');
      await page.clock.pauseAt(Date.now() + 1000);
      await own.stop();
      await page.locator('#status[data-status="reconnecting"]').waitFor();
      // Several attempts, each given real time to fail against the stopped server.
      const attempts = await countSockets(page);
      for (let i = 0; i < 8; i++) {
        await page.clock.runFor(16_000);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(attempts()).toBeGreaterThanOrEqual(4);
      expect(await countLines(page, /Connection lost/)).toBe(1);
      expect(await countLines(page, /Retrying/)).toBe(0);
      await page.locator('#status-detail', { hasText: /Retrying in \d+ s/ }).waitFor();

      await restart();
      await page.click('#retry');
      await page.locator('#status[data-status="online"]').waitFor();
      await seeLine(page, 'Reconnected as steady.');
      expect(await countLines(page, /Reconnected/)).toBe(1);
      expect(await countLines(page, /Connection lost/)).toBe(1);
      expect(await page.textContent('#status-detail')).toBe('');
    });
  }, 60_000);

  it('waits longer each time the server closes the connection right after taking it back', async () => {
    await onOwnServer(async (page, own, restart) => {
      await joinAs(page, 'unlucky');
      // From now on each socket closes once the server has taken it ("03"), as one whose
      // disk is full closes each sender at its first chat.
      const attempts = await countSockets(page, true);
      await page.clock.pauseAt(Date.now() + 1000);
      await own.stop();
      await restart();
      // 30 s of the page's time, each second given real time to connect and be closed.
      for (let i = 0; i < 30; i++) {
        await page.clock.runFor(1000);
        await new Promise((r) => setTimeout(r, 150));
      }
      // Waits of about 0.5, 1, 2, 4, 8 and 15 s: six or so. Starting again from 0.5 s after
      // each return, it was one every second or less.
      expect(attempts()).toBeGreaterThanOrEqual(3);
      expect(attempts()).toBeLessThanOrEqual(8);
    });
  }, 60_000);

  it('answers \\help with what the web page does, not the terminal', async () => {
    const page = await openPage(web.server.httpAddress!.port);
    try {
      await joinAs(page, 'helpme');
      await say(page, '\\help');
      const help = page.locator('#messages li.notice pre').last();
      await help.waitFor();
      const text = (await help.textContent()) ?? '';
      expect(text).toContain('\\exit');
      expect(text).not.toMatch(/Ctrl\+C|Ctrl\+D/);
      expect(text).toContain('PageUp');
      expect(text).toContain('\\wh <nickname> <text>');
    } finally {
      await page.close();
    }
  }, 30_000);
});
