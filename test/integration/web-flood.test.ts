/**
 * Members chatting at the flood limit must not freeze another member's page.
 * Each line stayed on the page for good, each link-heavy chat (4,096 characters
 * hold some 290 links) added some 300 elements, and each new line forced a
 * layout of the whole list: four course clients at the flood limit for 30 s
 * left a page of 500,000 elements taking 5 to 8 s a frame, still after they
 * stopped. A room now keeps its newest lines and characters while the reader
 * follows them (older ones load again from HISTORY), and a chat makes at most
 * 16 links.
 */

import { expect, it } from 'vitest';
import { useWebServer } from '../helpers/browser.js';
import { join } from '../helpers/raw-client.js';
import { joinAs } from '../helpers/web-page.js';

/** What the page's functions below use of the DOM (this project's types have no DOM). */
declare const document: {
  getElementsByTagName(name: string): { length: number };
  querySelector(selector: string): {
    scrollHeight: number;
    scrollTop: number;
    clientHeight: number;
  } | null;
};

// No flood control: the flood arrives at once instead of over a minute.
const web = useWebServer({ 'rate-limit': '0' });

it('keeps a page small and following while a member floods the room with links', async () => {
  const page = await web.browser.newPage({ viewport: { width: 1000, height: 700 } });
  await page.goto(`http://127.0.0.1:${web.server.httpAddress!.port}/`);
  await joinAs(page, 'reader');
  const eve = await join(web.server.address.port, 'eve');
  const links = 'https://a.example/c '.repeat(210).slice(0, 4080);
  for (let i = 0; i < 600; i++) eve.sendPy({ cmd: '7', msg: `${i} ${links}` });
  eve.sendPy({ cmd: '7', msg: 'end of the flood' });
  const last = page.locator('#messages li', { hasText: 'end of the flood' });
  await last.waitFor({ timeout: 60_000 });
  await page.waitForTimeout(300);

  const elements = await page.evaluate(() => document.getElementsByTagName('*').length);
  // 600 chats of some 200 links each were 120,000 links.
  expect(elements).toBeLessThan(20_000);
  expect(await last.locator('a').count()).toBe(0);
  expect(await page.locator('#messages li', { hasText: '599 https' }).locator('a').count()).toBe(
    16,
  );
  // The reader still follows the newest line.
  expect(await last.isVisible()).toBe(true);
  const gap = await page.evaluate(() => {
    const list = document.querySelector('#messages')!;
    return list.scrollHeight - list.scrollTop - list.clientHeight;
  });
  expect(gap).toBeLessThan(40);
  await page.close();
  eve.close();
}, 90_000);
