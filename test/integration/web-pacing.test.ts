import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { useWebServer } from '../helpers/browser.js';
import { join } from '../helpers/raw-client.js';
import { joinAs } from '../helpers/web-page.js';

// The browser globals the function passed to page.evaluate uses: the test
// project compiles for Node, without the DOM library.
declare const document: { getElementById(id: string): unknown };
interface PageInput {
  value: string;
}
interface PageForm {
  requestSubmit(): void;
}
interface PageNote {
  hidden: boolean;
  textContent: string | null;
}

declare const performance: { now(): number };

// Flood limits of 10 per second after a burst of 20 (half the defaults): the page
// paces to what "03" announces, 90% of each (src/protocol/pacing.ts), so 18 lines
// go at once and the rest 9 a second. Half the defaults because the queue this
// test looks at only forms if the page takes the lines faster than its bucket
// refills, and a loaded machine's page takes ~30 ms a line (60 lines in 1.8 s):
// at the defaults (36 at once, then 18/s) that left the queue empty or nearly so.
const RATE = 10;
const BURST = 20;
const PAGE_RATE = RATE * 0.9;
const PAGE_BURST = Math.floor(BURST * 0.9);
const web = useWebServer({ 'rate-limit': String(RATE), 'rate-burst': String(BURST) });

describe('web client pacing', () => {
  it('sends 60 lines submitted at once, in order, showing how many wait', async () => {
    const page = await web.browser.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    try {
      await page.goto(`http://127.0.0.1:${web.server.httpAddress!.port}/`);
      await joinAs(page, 'web');
      // Let the join's own requests (USERS, VERSION, RTT) settle first.
      await page.locator('#version:not(:empty)').waitFor();
      const tcp = await join(web.server.address.port, 'tcp');
      await page.locator('#messages li', { hasText: 'tcp joined' }).waitFor();

      const lines = Array.from({ length: 60 }, (_, i) => `line ${i + 1} from the browser`);
      // Submitted as fast as the page can: faster than any typist or paste handler.
      const shown = await page.evaluate((lines) => {
        const input = document.getElementById('input') as PageInput;
        const form = document.getElementById('composer') as PageForm;
        const start = performance.now();
        for (const line of lines) {
          input.value = line;
          form.requestSubmit();
        }
        const ms = performance.now() - start;
        const note = document.getElementById('queue') as PageNote;
        return { hidden: note.hidden, text: note.textContent, ms };
      }, lines);
      // However long the page took to take the lines, its bucket let at most a
      // burst go plus what refilled meanwhile; the rest must be waiting, and shown.
      // (Requests the page makes by itself only take tokens: more would wait.)
      const least = lines.length - Math.floor(PAGE_BURST + (PAGE_RATE * shown.ms) / 1000);
      expect(
        least,
        `the page took ${Math.round(shown.ms)} ms to take ${lines.length} lines`,
      ).toBeGreaterThan(0);
      expect(shown.hidden).toBe(false);
      expect(shown.text).toMatch(/^\d+ waiting…$/);
      const waiting = Number.parseInt(shown.text ?? '', 10);
      expect(waiting).toBeGreaterThanOrEqual(least);
      // Not everything held back: a burst's worth went at once.
      expect(waiting).toBeLessThanOrEqual(lines.length - PAGE_BURST + 3);

      const got: string[] = [];
      for (let i = 0; i < lines.length; i++) {
        const m = await tcp.expect('70', 15_000).catch(async (err: unknown) => {
          // Where the lines stopped, and what the page said then, not only that they did.
          const queue = await page.locator('#queue').textContent();
          const status = await page.getAttribute('#status', 'data-status');
          const errors = await page.locator('#messages li.error').allTextContents();
          throw new Error(
            `${got.length} of ${lines.length} lines arrived; page queue "${queue}", status ${status}, errors ${JSON.stringify(errors)}, page errors ${JSON.stringify(pageErrors)}: ${String(err)}`,
          );
        });
        expect(m.from).toBe('web');
        got.push(String(m.msg));
      }
      expect(got).toEqual(lines);
      await page.locator('#queue').waitFor({ state: 'hidden' });
      expect(await page.locator('#messages li.error').count()).toBe(0);
      expect(await page.locator('#messages li.mine').count()).toBe(60);
      expect(await page.getAttribute('#status', 'data-status')).toBe('online');
      expect(pageErrors).toEqual([]);
      tcp.close();
    } finally {
      await page.close();
    }
    // The 42 paced lines take 4.7 s at 9 a second, 3.4 s more than at the
    // defaults, where this test already took 9 to 20 s on a loaded machine
    // (joining alone up to 8 s): the file default of 20 s would not do.
  }, 30_000);

  /**
   * A page joined as `nickname` (after `before`) that submits `typed` as fast as it takes
   * lines; resolves once it says it is known as `last`, with no error line and no page error.
   */
  async function renamesUnrefused(
    nickname: string,
    typed: string[],
    last: string,
    before: (page: Page) => Promise<void> = async () => {},
  ): Promise<void> {
    const page = await web.browser.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    try {
      await page.goto(`http://127.0.0.1:${web.server.httpAddress!.port}/`);
      await joinAs(page, nickname);
      await page.locator('#version:not(:empty)').waitFor();
      await before(page);
      await page.evaluate((typed) => {
        const input = document.getElementById('input') as PageInput;
        const form = document.getElementById('composer') as PageForm;
        for (const line of typed) {
          input.value = line;
          form.requestSubmit();
        }
      }, typed);
      await page
        .locator('ol.messages li', { hasText: `You are now known as ${last}.` })
        .waitFor({ state: 'attached', timeout: 20_000 });
      expect(await page.locator('ol.messages li.error').allTextContents()).toEqual([]);
      expect(pageErrors).toEqual([]);
    } finally {
      await page.close();
    }
  }

  it('counts the rooms of joins not yet answered in what a rename behind them costs', async () => {
    const typed = Array.from({ length: 8 }, (_, i) => [`\\join q${i}`, `\\rename quick${i}`]);
    await renamesUnrefused('quick', typed.flat(), 'quick7');
  }, 30_000);

  it('paces a rename as one request for each of its rooms, and is never refused', async () => {
    // In 8 rooms a rename counts 8 (at most half the burst of 20): three with a few
    // lines between them spend more than the burst, so the page must wait for some.
    const typed = ['a', 'b', '\\rename namer1', 'c', '\\rename namer2', 'd', '\\rename namer3'];
    await renamesUnrefused('namer', typed, 'namer3', async (page) => {
      for (const room of ['r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7']) {
        await page.fill('#room-name', room);
        await page.press('#room-name', 'Enter');
        await page.locator(`#messages[data-room="${room}"]`).waitFor();
      }
    });
  }, 30_000);
});
