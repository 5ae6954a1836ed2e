import type { Page } from 'playwright-core';

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
