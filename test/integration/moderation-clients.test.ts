import { mkdirSync, rmdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatProcess } from '../helpers/chat-process.js';
import { useOperatorServer } from '../helpers/operator-server.js';
import { join } from '../helpers/raw-client.js';
import { say } from '../helpers/web-page.js';

const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'];

const operated = useOperatorServer({ 'http-port': '0' });

describe('confab chat', () => {
  it('\\oper and \\kick from one terminal; another terminal and the kicked one see it in words', async () => {
    const port = String(operated.server.address.port);
    const op = ChatProcess.start(['teach', '--port', port]);
    const ann = ChatProcess.start(['ann', '--port', port]);
    const bob = ChatProcess.start(['bob', '--port', port]);
    try {
      await op.waitFor('as teach.');
      await ann.waitFor('as ann.');
      await bob.waitFor('as bob.');
      op.type('\\oper teacher wrong');
      await op.waitFor('wrong operator name or password');
      ann.type('\\kick bob');
      await ann.waitFor('you are not an operator');
      op.type('\\oper teacher sesame');
      await op.waitFor('You are now operator teacher.');
      op.type('\\kick bob flooding the room');
      await ann.waitFor('bob was kicked by teacher (flooding the room)');
      await op.waitFor('bob was kicked by teacher (flooding the room)');
      await bob.waitFor('You were kicked by teacher: flooding the room.');
      expect(await bob.exited).toBe(1);
      op.type('\\ban 127.0.0.9 2h being rude');
      await op.waitFor(
        /127\.0\.0\.9 by teacher for (2 hours|1 hour 59 minutes) more \(being rude\)/,
      );
      // One ban a line: the list's own line breaks are not shown as "^J".
      await op.waitFor(/Bans:\r?\n {2}127\.0\.0\.9 by teacher/);
      op.type('\\unban 127.0.0.9');
      // Said before the list, which alone did not tell whether the unban took.
      await op.waitFor(/Unbanned 127\.0\.0\.9\.\r?\nNo bans\./);
      // A ban list that cannot be written (bans.json a directory): the ban holds until a
      // restart, and the operator is told so under the list, not left to find out.
      const bansFile = path.join(operated.dataDir, 'bans.json');
      rmSync(bansFile, { force: true });
      mkdirSync(bansFile);
      try {
        op.type('\\ban 127.0.0.10');
        await op.waitFor(
          /Bans:\r?\n {2}127\.0\.0\.10 by teacher until unbanned\r?\nThe ban list could not be saved \(E[A-Z]+\): this change holds only until the server restarts\./,
        );
      } finally {
        rmdirSync(bansFile);
      }
      op.type('\\unban 127.0.0.10');
      await op.waitFor(/Unbanned 127\.0\.0\.10\.\r?\nNo bans\./);
      expect(op.output.match(/could not be saved/g)).toHaveLength(1);
      // A reload that takes the operator out of the list says so to it at once.
      const operators = operated.server.chat.operators;
      operated.server.chat.reconfigure({ operators: [] });
      try {
        await op.waitFor(
          "You are no longer operator teacher: the server's operators list changed.",
        );
        expect(op.output).not.toContain('Refused: you are no longer');
      } finally {
        operated.server.chat.reconfigure({ operators });
      }
    } finally {
      await Promise.all([op.stop(), ann.stop(), bob.stop()]);
    }
  });
});

describe('the web app', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_FLAGS });
  }, 30_000);
  afterAll(async () => {
    await browser?.close();
  });

  async function joinAs(nickname: string): Promise<Page> {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${operated.server.httpAddress!.port}/`);
    await page.fill('#nickname', nickname);
    await page.press('#nickname', 'Enter');
    await page.locator('#status[data-status="online"]').waitFor();
    return page;
  }

  it('shows a kick in words to the room and tells the kicked user why', async () => {
    const watcher = await joinAs('watcher');
    const victim = await joinAs('victim');
    const op = await join(operated.server.address.port, 'webop', {
      caps: ['errors', 'moderation'],
    });
    operated.clients.push(op);
    op.sendPy({ cmd: '92', name: 'teacher', password: 'sesame' });
    await op.expect('93');
    op.sendPy({ cmd: '94', nickname: 'victim', reason: 'spam' });
    // Names and the reason in the notice are isolated (U+2068 … U+2069), so a relayed bidi
    // control in one cannot reverse the words around it.
    await watcher
      .locator('#messages li', {
        hasText: '\u2068victim\u2069 was kicked by \u2068teacher\u2069 (\u2068spam\u2069)',
      })
      .waitFor();
    await victim.locator('#messages li', { hasText: 'kicked by teacher: spam' }).first().waitFor();
    await victim.close();
    await watcher.close();
  });

  it('says whether an unban lifted a ban, then lists the bans left', async () => {
    const op = await joinAs('pageop');
    await say(op, '\\oper teacher sesame');
    await op.locator('#messages li', { hasText: 'You are now operator teacher' }).waitFor();
    await say(op, '\\ban 127.0.8.0/24');
    await say(op, '\\unban 127.0.8.7');
    await op
      .locator('#messages li', {
        hasText: 'No ban on 127.0.8.7 to lift: a ban is lifted by its own mask',
      })
      .waitFor();
    await say(op, '\\unban 127.0.8.0/24');
    await op.locator('#messages li', { hasText: 'Unbanned 127.0.8.0/24.' }).waitFor();
    await op.locator('#messages li', { hasText: 'No bans.' }).waitFor();
    const bansFile = path.join(operated.dataDir, 'bans.json');
    rmSync(bansFile, { force: true });
    mkdirSync(bansFile);
    try {
      await say(op, '\\ban 127.0.9.0/24');
      await op
        .locator('#messages li', {
          hasText:
            /The ban list could not be saved \(E[A-Z]+\): this change holds only until the server restarts\./,
        })
        .waitFor();
    } finally {
      rmdirSync(bansFile);
    }
    // A reload that ends the status is said at once.
    const operators = operated.server.chat.operators;
    operated.server.chat.reconfigure({ operators: [] });
    try {
      await op
        .locator('#messages li', {
          hasText: "you are no longer operator teacher: the server's operators list changed",
        })
        .waitFor();
    } finally {
      operated.server.chat.reconfigure({ operators });
    }
    await op.close();
  });
});
