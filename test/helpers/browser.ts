import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll } from 'vitest';
import type { ConfabServer } from '../../src/server.js';
import { startConfab } from './servers.js';

/**
 * How the tests start Debian's Chromium: headless, as root (no sandbox), and
 * without the background traffic this machine's closed network would refuse.
 */
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Debian's Chromium, driven by playwright-core (which downloads no browser of its own). */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_FLAGS });
}

/** What `useWebServer` starts for a test file, there once its tests run. */
export interface WebServer {
  readonly browser: Browser;
  readonly server: ConfabServer;
}

/**
 * Chromium and a confab serving its web app (with `flags` besides), started before the
 * file's tests and stopped after them.
 */
export function useWebServer(flags: Record<string, string> = {}): WebServer {
  const web = {} as { browser: Browser; server: ConfabServer };
  beforeAll(async () => {
    web.browser = await launchChromium();
    web.server = await startConfab({ 'http-port': '0', ...flags });
  }, 30_000);
  afterAll(async () => {
    await web.browser?.close();
    await web.server?.stop();
  });
  return web;
}
