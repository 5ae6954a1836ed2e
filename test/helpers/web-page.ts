import type { Browser, Page } from 'playwright-core';
import { expect } from 'vitest';

/** Picks a nickname on the web app's join card and waits until it is online. */
export async function joinAs(page: Page, nickname: string): Promise<void> {
  await page.fill('#nickname', nickname);
  await page.press('#nickname', 'Enter');
  await page.locator('#join').waitFor({ state: 'hidden' });
  await page.locator('#status[data-status="online"]').waitFor();
}

/** Types a line into the web app's input and sends it. */
export async function say(page: Page, text: string): Promise<void> {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

/**
 * A page of the web app at `port`, 1100×700, after `before` (init scripts, a clock): its
 * uncaught errors and CSP violations fail the test when it closes.
 */
export async function openPage(
  browser: Browser,
  port: number,
  before?: (page: Page) => Promise<unknown>,
): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.text().includes('Content Security Policy')) problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('close', () => expect(problems).toEqual([]));
  await before?.(page);
  await page.goto(`http://127.0.0.1:${port}/`);
  return page;
}
