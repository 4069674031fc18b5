import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

/** Debian's Chromium (`apt-get install chromium`), or `CHROMIUM_PATH`. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Whether a browser suite can run: Chromium is installed. Under `CI=true` a missing browser is
 * an error (the suite must fail, not skip); elsewhere the suite is skipped with a warning.
 */
export function chromiumAvailable(suite: string): boolean {
  const available = existsSync(CHROMIUM);
  if (!available && process.env.CI === 'true') throw new Error(`Chromium is not installed at ${CHROMIUM}, and CI=true requires the ${suite} test`);
  if (!available) console.warn(`[${suite}] skipped: no Chromium at ${CHROMIUM} (apt-get install chromium)`);
  return available;
}

/** Headless Chromium with the flags this machine needs (no sandbox, no GPU, no network chatter). */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
}
