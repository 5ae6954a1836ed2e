import { type Browser, chromium } from 'playwright-core';

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
