/**
 * confab's own clients on a cluster whose Redis loses its history: the new
 * epoch numbers chats from 1 again, and neither the client library nor the
 * web app may take them for messages already shown.
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatClient, type ChatEvents, type ChatMessage } from '../../src/client/chat-client.js';
import { launchChromium } from '../helpers/browser.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';
import { joinAs } from '../helpers/web-page.js';

const skip = withoutRedis();

let cluster: TestCluster;
let browser: Browser;

beforeAll(async () => {
  if (skip) return;
  // Redis restarts here take a while on a busy machine: a node must not take
  // that for being cut off (3006), which these tests are not about.
  cluster = await startCluster(2, ['--max-users', '20', '--cluster-timeout', '30']);
  browser = await launchChromium();
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await cluster?.stop();
}, 60_000);

interface PageElement {
  textContent: string | null;
  querySelector(selector: string): PageElement | null;
}
declare const document: { querySelectorAll(selector: string): Iterable<PageElement> };

/** The chat lines of the page's lobby, as "from: text". */
function lobbyLines(page: Page): Promise<string[]> {
  return page.evaluate(() =>
    [...document.querySelectorAll('ol.messages[data-room="lobby"] li.msg')].map((li) => {
      const nick = li.querySelector('.nick')?.textContent ?? '';
      const time = li.querySelector('time')?.textContent ?? '';
      return `${nick}: ${(li.textContent ?? '').slice(time.length + nick.length)}`;
    }),
  );
}

/** Waits (bounded) until `done` holds. */
async function until(what: string, done: () => boolean): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (let i = 0; i < 1_500 && Date.now() < deadline; i++) {
    if (done()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe.skipIf(skip)('clients across a Redis restart that lost history', () => {
  it('the client library and the web app show every chat of the new epoch, after a gap notice', async () => {
    const node1 = cluster.nodes[1]!;
    const sender = await RawClient.open(cluster.nodes[0]!.port);
    const client = await ChatClient.connect({ port: node1.port, nickname: 'lib', history: true });
    const page = await browser.newPage();
    const chats: ChatMessage[] = [];
    const gaps: ChatEvents['gap'][0][] = [];
    client.on('chat', (m) => chats.push(m));
    client.on('gap', (g) => gaps.push(g));
    try {
      await page.goto(`http://127.0.0.1:${node1.httpPort}/`);
      await joinAs(page, 'web');
      sender.sendPy({ cmd: '0', nickname: 'sender', caps: ['errors', 'rooms', 'history'] });
      await sender.expect('03');
      const send = async (msg: string) => {
        sender.sendPy({ cmd: '7', msg, room: 'lobby' });
        await sender.expect('71', 15_000);
        await until(`the library's "${msg}"`, () => chats.some((m) => m.msg === msg));
        await page
          .locator('ol.messages[data-room="lobby"] li.msg', { hasText: msg })
          .waitFor({ state: 'attached' });
      };
      for (const msg of ['old 1', 'old 2', 'old 3']) await send(msg);

      await cluster.redis.restart();
      await until('a gap notice', () => gaps.length > 0);
      expect(gaps).toEqual([{ room: 'lobby', epoch: expect.any(String), reason: 'epoch' }]);
      await page.locator('ol.messages[data-room="lobby"] li.marker[data-reason="epoch"]').waitFor();
      // The new epoch's ids are 1, 2, 3 again.
      for (const msg of ['new 1', 'new 2', 'new 3']) await send(msg);

      expect(chats.map((m) => `${m.msg}#${m.id}`)).toEqual([
        'old 1#1',
        'old 2#2',
        'old 3#3',
        'new 1#1',
        'new 2#2',
        'new 3#3',
      ]);
      expect(await lobbyLines(page)).toEqual([
        'sender: old 1',
        'sender: old 2',
        'sender: old 3',
        'sender: new 1',
        'sender: new 2',
        'sender: new 3',
      ]);
    } finally {
      sender.close();
      client.destroy();
      await page.close();
    }
  }, 90_000);
});
