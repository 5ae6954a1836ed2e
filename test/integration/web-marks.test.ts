/**
 * A chat of stacked combining marks ("Zalgo": a letter with hundreds of marks
 * above and below it, which chat text may hold) must not draw over the other
 * lines of a member's page. Unclipped, each stack paints a column hundreds of
 * pixels tall through the messages above and below it, so one member can make
 * everyone else's lines unreadable.
 *
 * The check: the pixels of the lines around such a message are the same before
 * and after it arrives.
 */
import type { Page } from 'playwright-core';
import { expect, it } from 'vitest';
import { useWebServer } from '../helpers/browser.js';
import { join, type RawClient } from '../helpers/raw-client.js';
import { joinAs } from '../helpers/web-page.js';

const web = useWebServer();

const lineOf = (page: Page, text: string) => page.locator('#messages li', { hasText: text }).last();

async function shown(page: Page, text: string): Promise<void> {
  await lineOf(page, text).waitFor();
}

it('keeps a message of stacked combining marks inside its own line', async () => {
  const page = await web.browser.newPage({ viewport: { width: 1000, height: 900 } });
  await page.goto(`http://127.0.0.1:${web.server.httpAddress!.port}/`);
  await joinAs(page, 'reader');
  const eve: RawClient = await join(web.server.address.port, 'eve');
  for (const n of [1, 2, 3]) {
    eve.sendPy({ cmd: '7', msg: `plain line ${n}` });
    await shown(page, `plain line ${n}`);
  }
  // The marks will arrive right below line 3.
  const before = await Promise.all([2, 3].map((n) => lineOf(page, `plain line ${n}`).screenshot()));

  // 60 marks above and 60 below each of 30 letters: 3,630 characters, under --max-message.
  const zalgo = `a${'\u0301'.repeat(60)}${'\u0316'.repeat(60)}`.repeat(30);
  eve.sendPy({ cmd: '7', msg: zalgo });
  eve.sendPy({ cmd: '7', msg: 'plain line 4' });
  await shown(page, 'plain line 4');
  await page.waitForTimeout(200);

  const after = await Promise.all([2, 3].map((n) => lineOf(page, `plain line ${n}`).screenshot()));
  expect(after.map((png, i) => png.equals(before[i]!))).toEqual([true, true]);
  await page.close();
  eve.close();
}, 30_000);

it('starts every row of a wrapped chat after its first further in, so padding cannot forge a line', async () => {
  const page = await web.browser.newPage({ viewport: { width: 700, height: 900 } });
  await page.goto(`http://127.0.0.1:${web.server.httpAddress!.port}/`);
  await joinAs(page, 'reader');
  const eve: RawClient = await join(web.server.address.port, 'eve');
  // No-break spaces are not collapsed: they fill the row, and the text after them wraps.
  const forged = `x${'\u00a0'.repeat(300)} 12:00 admin: the server restarts now`;
  eve.sendPy({ cmd: '7', msg: forged });
  eve.sendPy({ cmd: '7', msg: 'word '.repeat(120) });
  await shown(page, 'word word');
  for (const text of ['admin: the server', 'word word']) {
    // Each row's left edge: the leftmost of the boxes on it (boxes of one row overlap
    // vertically; the time's smaller font sits a little lower than the text).
    const rows = await lineOf(page, text).evaluate((li) => {
      const range = li.ownerDocument.createRange();
      range.selectNodeContents(li);
      const boxes = [...range.getClientRects()].filter((r) => r.width > 0);
      boxes.sort((a, b) => a.top - b.top);
      const rows: { bottom: number; left: number }[] = [];
      for (const box of boxes) {
        const row = rows[rows.length - 1];
        if (row !== undefined && box.top < row.bottom - 2) row.left = Math.min(row.left, box.left);
        else rows.push({ bottom: box.bottom, left: box.left });
      }
      return rows.map((row) => row.left);
    });
    expect(rows.length).toBeGreaterThan(1);
    for (const left of rows.slice(1)) expect(left).toBeGreaterThanOrEqual(rows[0]! + 16);
  }
  await page.close();
  eve.close();
}, 30_000);

it('shows at most 16 combining marks on a letter, so a chat of thousands cannot hold up every reader’s page', async () => {
  const page = await web.browser.newPage({ viewport: { width: 1000, height: 900 } });
  await page.goto(`http://127.0.0.1:${web.server.httpAddress!.port}/`);
  await joinAs(page, 'reader3');
  const eve: RawClient = await join(web.server.address.port, 'eve3');
  // As --max-message allows: one letter and 4,095 marks; two such runs of 2,000.
  eve.sendPy({ cmd: '7', msg: `a${'\u0301'.repeat(4095)}` });
  eve.sendPy({ cmd: '7', msg: `b${'\u0316'.repeat(2000)}c${'\u0301\u0316'.repeat(1000)}` });
  // Marks parted by characters that draw nothing still stack on one letter.
  eve.sendPy({ cmd: '7', msg: `e${`${'\u0301'.repeat(15)}\u200c`.repeat(240)}` });
  // Writing that stacks marks keeps them all: Vietnamese (two on a letter, decomposed), and
  // a letter with exactly sixteen.
  const kept = ['Tie\u0302\u0301ng Vie\u0323\u0302t', `d${'\u0300'.repeat(16)} sixteen`];
  for (const msg of kept) eve.sendPy({ cmd: '7', msg });
  eve.sendPy({ cmd: '7', msg: 'plain after' });
  await shown(page, 'plain after');
  const texts = await page
    .locator('#messages li.msg')
    .evaluateAll((lis) => lis.map((li) => li.textContent ?? ''));
  const runs = (text: string) =>
    (text.match(/[\p{M}\p{Default_Ignorable_Code_Point}]+/gu) ?? []).map((run) => [...run].length);
  // This page's lines from eve3 (the lobby's history holds the earlier tests' too).
  const heavy = texts.filter(
    (t) => t.includes('eve3') && (t.includes('\u0301\u0301') || t.includes('\u0316\u0316')),
  );
  expect(heavy.map(runs)).toEqual([[16], [16, 16], [16]]);
  expect(heavy.map((t) => t.split('…').length - 1)).toEqual([1, 2, 1]);
  for (const msg of kept) {
    expect(texts.some((t) => t.normalize('NFC').includes(msg.normalize('NFC')))).toBe(true);
  }
  await page.close();
  eve.close();
}, 30_000);

it('wraps a chat whose characters join into one long cluster, so the rest of it stays readable', async () => {
  const page = await web.browser.newPage({ viewport: { width: 1000, height: 900 } });
  await page.goto(`http://127.0.0.1:${web.server.httpAddress!.port}/`);
  await joinAs(page, 'reader4');
  const eve: RawClient = await join(web.server.address.port, 'eve4');
  // Each run joins the character after it into one grapheme cluster, which no line may break:
  // Arabic signs written before a number (Prepend), and Hangul's conjoining letters.
  const clusters = {
    prepend: `x${'\u0600'.repeat(800)}y`,
    mixed: `x${'\u0601\u06dd\u070f\u0890\u08e2'.repeat(160)}y`,
    leading: '\u1100'.repeat(800),
    vowels: `\u1100${'\u1161'.repeat(800)}`,
    trailing: `\u1100\u1161${'\u11a8'.repeat(800)}`,
    // Devanagari consonants joined by viramas (Unicode 15.1's conjuncts).
    conjunct: `${'\u0915\u094d'.repeat(400)}\u0915`,
  };
  for (const [name, run] of Object.entries(clusters)) {
    eve.sendPy({ cmd: '7', msg: `${name} ${run} end-of-${name}` });
  }
  // Korean as written keeps its jamo: a syllable of three, decomposed.
  eve.sendPy({ cmd: '7', msg: 'korean \u1112\u1161\u11ab\u1100\u1173\u11af' });
  eve.sendPy({ cmd: '7', msg: 'plain after' });
  await shown(page, 'plain after');
  for (const name of Object.keys(clusters)) {
    const line = lineOf(page, `end-of-${name}`);
    const fits = await line.evaluate((li) => li.scrollWidth <= li.clientWidth);
    expect(fits, name).toBe(true);
    await expect(line.textContent()).resolves.toContain('…');
  }
  await expect(lineOf(page, 'korean').textContent()).resolves.toContain(
    '\u1112\u1161\u11ab\u1100\u1173\u11af',
  );
  await page.close();
  eve.close();
}, 30_000);
