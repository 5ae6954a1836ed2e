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

// The default flood limits: 20 per second after a burst of 40.
const web = useWebServer();

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
        for (const line of lines) {
          input.value = line;
          form.requestSubmit();
        }
        const note = document.getElementById('queue') as PageNote;
        return { hidden: note.hidden, text: note.textContent };
      }, lines);
      expect(shown.hidden).toBe(false);
      expect(shown.text).toMatch(/^\d+ waiting…$/);
      expect(Number.parseInt(shown.text ?? '', 10)).toBeGreaterThan(10);

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
  });
});
