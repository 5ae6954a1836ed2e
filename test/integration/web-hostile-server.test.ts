/**
 * The web app against a server that sends what the protocol does not say. Its WebSocket is
 * routed to the test (playwright's routeWebSocket), which plays the server. JSON can send an
 * object whose conversion to text throws ({"toString": ""}): String() and Number() of it
 * throw a TypeError, which ended the page's handling of that message. In "03" it left the
 * page on "Connecting…" for good, its join card up, with the socket open: nothing retried.
 */

import type { Page, WebSocketRoute } from 'playwright-core';
import { expect, it } from 'vitest';
import { useWebServer } from '../helpers/browser.js';
import { joinAs, say } from '../helpers/web-page.js';

const POISON = { toString: '' };
const CAPS = ['errors', 'renames', 'whispers', 'moderation', 'rooms', 'history'];

const web = useWebServer();

/** A page whose WebSocket talks to `serve` instead of confab; collects its uncaught errors. */
async function hostilePage(
  /** Returns true for a request it answered itself. */
  serve: (request: { cmd: string; beginTime?: number }, send: (v: object) => void) => boolean,
): Promise<{ page: Page; errors: string[] }> {
  const page = await web.browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.routeWebSocket(/\/ws$/, (ws: WebSocketRoute) => {
    const send = (v: object) => ws.send(JSON.stringify(v));
    ws.onMessage((data) => {
      const request = JSON.parse(String(data)) as { cmd: string; beginTime?: number };
      if (serve(request, send) === true) return;
      if (request.cmd === '6') send({ cmd: '60', beginTime: request.beginTime });
      else if (request.cmd === '1') send({ cmd: '10', users: [['ann', '127.0.0.1', 1]] });
      else if (request.cmd === '4') send({ cmd: '40', serverVersion: '1' });
    });
  });
  await page.goto(`http://127.0.0.1:${web.server.httpAddress!.port}/`);
  return { page, errors };
}

it('joins when "03" grants a capability that cannot be made text', async () => {
  const { page, errors } = await hostilePage((request, send) => {
    if (request.cmd !== '0') return false;
    send({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1, caps: [...CAPS, POISON] });
    return true;
  });
  await joinAs(page, 'ann');
  expect(errors).toEqual([]);
  await page.close();
}, 30_000);

it('shows values of the wrong kind as text, and goes on', async () => {
  const { page, errors } = await hostilePage((request, send) => {
    if (request.cmd !== '0') return false;
    send({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1, caps: CAPS });
    for (const message of [
      { cmd: '70', from: POISON, msg: 'from no text' },
      { cmd: '70', from: 'bob', msg: POISON },
      { cmd: '70', from: 'bob', msg: 'whispered', whisper: true, room: POISON },
      { cmd: '101', room: 'lobby', members: [POISON, 'bob'], userCount: POISON },
      { cmd: '8', nickname: POISON, userCount: POISON },
      { cmd: '30', nickname: POISON, userCount: POISON },
      { cmd: '91', oldNickname: POISON, newNickname: POISON },
      { cmd: '99', action: POISON, nickname: POISON, by: POISON, reason: POISON },
      { cmd: '90', code: POISON, message: POISON },
      { cmd: '103', room: POISON },
      { cmd: '70', from: 'bob', msg: 'still here' },
    ])
      send(message);
    return true;
  });
  await joinAs(page, 'ann');
  await page.locator('#messages li', { hasText: 'still here' }).waitFor();
  expect(errors).toEqual([]);
  await expect(page.locator('#messages li', { hasText: 'from no text' }).count()).resolves.toBe(1);
  await page.close();
}, 30_000);

it('shows stored messages whose time or entry is of the wrong kind', async () => {
  // A stored message's line shows the server's time: new Date(at).toISOString() threw a
  // RangeError for a time out of a Date's range (1e300), and a "107" entry that is null or
  // whose time cannot be made a number threw before it: the message was lost, and with it
  // the rest of that page of history.
  const { page, errors } = await hostilePage((request, send) => {
    if (request.cmd !== '0') return false;
    send({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1, caps: CAPS });
    send({ cmd: '101', room: 'lobby', members: ['ann'], userCount: 1, epoch: 'e', top: 0 });
    send({ cmd: '70', room: 'lobby', id: 1, at: 1e300, from: 'bob', msg: 'from far ahead' });
    send({
      cmd: '107',
      room: 'lobby',
      epoch: 'e',
      messages: [null, { id: -2, at: POISON, from: 'bob', msg: 'at no time' }],
      more: false,
    });
    send({ cmd: '70', from: 'bob', msg: 'still here' });
    return true;
  });
  await joinAs(page, 'ann');
  await page.locator('#messages li', { hasText: 'still here' }).waitFor();
  expect(errors).toEqual([]);
  for (const text of ['from far ahead', 'at no time']) {
    await expect(page.locator('#messages li', { hasText: text }).count()).resolves.toBe(1);
  }
  await page.close();
}, 30_000);

it('answers commands whose replies are of the wrong kind', async () => {
  // Each threw inside the command, which the page swallowed: nothing was shown. At join, the
  // member list's USERS threw before the version and RTT were asked for, and the list stayed
  // marked out of date while online.
  const { page, errors } = await hostilePage((request, send) => {
    switch (request.cmd) {
      case '0':
        send({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1, caps: CAPS });
        return true;
      case '1':
        send({ cmd: '10', users: [POISON, 'bob', ['carl', 1, 2], null] });
        return true;
      case '97':
        send({
          cmd: '98',
          bans: [
            null,
            7,
            { mask: POISON, by: 'op', expires: 'soon' },
            // A reason that would add a line looking like another ban.
            { mask: 'eve', by: 'op', expires: null, reason: 'spam\nmallory by op until unbanned' },
          ],
        });
        return true;
      case '104':
        send({ cmd: '105', rooms: [null, POISON, { room: POISON, userCount: POISON }] });
        return true;
      default:
        return false;
    }
  });
  await joinAs(page, 'ann');
  await page.locator('#version', { hasText: 'server v1' }).waitFor();
  await say(page, '\\users');
  await page.locator('#messages li', { hasText: '4 in the room' }).waitFor();
  await say(page, '\\bans');
  await page.locator('#messages li', { hasText: 'by op' }).first().waitFor();
  const listed = await page.locator('#messages li pre').last().textContent();
  // Two bans, two lines: the reason's line break is shown, not made.
  expect(listed!.split('\n')).toHaveLength(2);
  expect(listed).toContain('(\u2068spam↵mallory by op until unbanned\u2069)');
  await say(page, '\\rooms');
  await page.locator('#messages li', { hasText: '#[object Object]' }).first().waitFor();
  expect(errors).toEqual([]);
  await page.close();
}, 30_000);

/** What the page's function below uses of the DOM (this project's types have no DOM). */
declare const document: {
  querySelectorAll(selector: string): Iterable<{ textContent: string | null; firstChild: unknown }>;
  createTreeWalker(root: unknown, what: number): { nextNode(): { data: string } | null };
  createRange(): {
    setStart(node: unknown, at: number): void;
    setEnd(node: unknown, at: number): void;
    getBoundingClientRect(): { left: number };
  };
};

it("keeps a nickname's bidirectional controls to the nickname", async () => {
  // A nickname ending in U+202E (right-to-left override) showed the rest of its line reversed:
  // the chat after it, and "is now known as ..." after a renamed one.
  const { page, errors } = await hostilePage((request, send) => {
    if (request.cmd === '1') {
      send({
        cmd: '10',
        users: [
          ['eve\u202e', '127.0.0.1', 1],
          ['carlos', '127.0.0.1', 2],
        ],
      });
      return true;
    }
    if (request.cmd !== '0') return false;
    send({ cmd: '03', serverAddress: ['127.0.0.1', 1], userCount: 1, caps: CAPS });
    send({ cmd: '70', from: 'eve\u202e', msg: 'abcdef' });
    send({ cmd: '91', oldNickname: 'mal\u202e', newNickname: 'bob' });
    send({ cmd: '8', nickname: 'zed\u202e', userCount: 2 });
    send({ cmd: '99', action: 'kick', nickname: 'kim\u202e', by: 'op\u202e', reason: 'spam' });
    send({ cmd: '99', action: 'kick', nickname: 'lee', by: 'op', reason: 'rude\u202e' });
    send({ cmd: '70', from: 'bob', msg: 'still here' });
    return true;
  });
  await joinAs(page, 'ann');
  await page.locator('#messages li', { hasText: 'still here' }).waitFor();
  // \users lists the names after one another: each is isolated there too.
  await say(page, '\\users');
  await page.locator('#messages li', { hasText: '2 in the room' }).waitFor();
  // Whether each text reads left to right on the page: its first letter left of its last.
  const order = await page.evaluate(
    (texts: string[]) => {
      const leftOf = (node: unknown, at: number) => {
        const range = document.createRange();
        range.setStart(node, at);
        range.setEnd(node, at + 1);
        return range.getBoundingClientRect().left;
      };
      return texts.map((text) => {
        for (const li of document.querySelectorAll('#messages li')) {
          const walker = document.createTreeWalker(li, 4); // NodeFilter.SHOW_TEXT
          for (let node = walker.nextNode(); node !== null; node = walker.nextNode()) {
            const at = node.data.indexOf(text);
            if (at >= 0) return leftOf(node, at) < leftOf(node, at + text.length - 1);
          }
        }
        return undefined;
      });
    },
    ['abcdef', ' is now known as', ' joined', ' was kicked by', 'spam', 'carlos'],
  );
  expect(order).toEqual([true, true, true, true, true, true]);
  // An operator's reason is isolated too: its override ends with it.
  const kicked = page.locator('#messages li', { hasText: 'rude' });
  expect(await kicked.textContent()).toContain('(\u2068rude\u202e\u2069)');
  expect(errors).toEqual([]);
  await page.close();
}, 30_000);
