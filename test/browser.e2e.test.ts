import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { chromiumAvailable, launchChromium } from './support/chromium.js';
import { addUser, GOOD_PASSWORD, startHarness, totpAt, type Harness } from './support/helpers.js';

const available = chromiumAvailable('browser.e2e');

const ROUTES = `
routes:
  - name: secure
    match: { path: /secure/** }
    upstream: echo
    access: authenticated
    mfa: true
  - name: app
    match: { path: /** }
    upstream: echo
    access: authenticated
`;

describe.runIf(available)('a real browser signs in, stays signed in past the access TTL, signs out', () => {
  let h: Harness;
  let browser: Browser;
  // The gateway's clock runs ahead of real time by `skew`, so the test can step past a used
  // TOTP time step without sleeping (the browser's own cookie clock is unaffected).
  let skew = 0;
  beforeAll(async () => {
    // A 2 s access token: the browser drops the access cookie and must be refreshed silently.
    h = await startHarness({ routes: ROUTES, extraYaml: 'auth:\n  access_ttl: 2s\n', now: () => new Date(Date.now() + skew) });
    await addUser(h, 'bea', ['staff'], { email: 'bea@example.com' });
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await h?.close();
  });

  it('runs the whole sign-in journey', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));

    // 1. A protected page sends the browser to the sign-in form, remembering where it was going.
    await page.goto(`${h.url}/reports/q3?view=full`);
    expect(new URL(page.url()).pathname).toBe('/api/auth/login');
    expect(new URL(page.url()).searchParams.get('rd')).toBe('/reports/q3?view=full');
    await expect(page.getByLabel('Username').isVisible()).resolves.toBe(true);

    // 2. A wrong password re-renders the form with an error.
    await page.getByLabel('Username').fill('bea');
    await page.getByLabel('Password').fill('not the password at all');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForLoadState();
    expect(await page.getByRole('alert').textContent()).toContain('wrong');

    // 3. The right one lands on the original page, and the demo app shows who is signed in.
    await page.getByLabel('Password').fill(GOOD_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${h.url}/reports/q3?view=full`);
    expect(await page.locator('main').textContent()).toContain('Signed in as bea');
    const cookies = await context.cookies();
    const at = cookies.find((c) => c.name === 'portcullis_at');
    expect(at).toMatchObject({ httpOnly: true, sameSite: 'Lax', path: '/' });
    // The page cannot read the tokens (HttpOnly), and nothing lands in localStorage.
    expect(await page.evaluate(() => document.cookie)).not.toContain('portcullis_');
    expect(await page.evaluate(() => localStorage.length)).toBe(0);

    // 4. Past the access TTL the browser drops the access cookie; a reload is refreshed silently.
    await page.waitForTimeout(3_000);
    expect((await context.cookies()).some((c) => c.name === 'portcullis_at')).toBe(false);
    await page.reload();
    expect(new URL(page.url()).pathname).toBe('/reports/q3');
    expect(await page.locator('main').textContent()).toContain('Signed in as bea');
    expect((await context.cookies()).some((c) => c.name === 'portcullis_at')).toBe(true);

    // 5. Sign out from the demo app: the sign-out page posts its form, and the browser is back
    //    on the sign-in page; protected pages send it there again.
    await page.getByRole('link', { name: 'Sign out' }).click();
    await page.waitForURL(`${h.url}/api/auth/logout`);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL((u) => u.pathname === '/api/auth/login');
    expect((await context.cookies()).filter((c) => c.name.startsWith('portcullis_'))).toEqual([]);
    await page.goto(`${h.url}/reports/q3`);
    expect(new URL(page.url()).pathname).toBe('/api/auth/login');
    // The pages work under the strict CSP: no violation was reported on the way.
    expect(errors.filter((e) => /Content Security Policy|Refused to/i.test(e))).toEqual([]);
    await context.close();
  });

  it('enrolls a second factor when a route needs one, then signs in with password and code', async () => {
    await addUser(h, 'carl', ['staff']);
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));

    // Signed in with a password only, a route with mfa: true sends carl to enrollment.
    await page.goto(`${h.url}/secure/vault`);
    await page.getByLabel('Username').fill('carl');
    await page.getByLabel('Password').fill(GOOD_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL((u) => u.pathname === '/api/auth/2fa/setup');
    await page.getByRole('button', { name: 'Set up an authenticator' }).click();
    await page.waitForLoadState();
    expect(await page.locator('.qr svg').count()).toBe(1);
    const secret = (await page.locator('#totp-secret').textContent())!.trim();
    await page.getByLabel('Code from the app').fill(await totpAt(secret, Date.now() + skew));
    await page.getByRole('button', { name: 'Turn on' }).click();
    await page.waitForLoadState();
    const codes = await page.locator('#recovery-codes li').allTextContents();
    expect(codes).toHaveLength(10);

    // Continue: sign in again, now with the code (a later time step than the one just used).
    skew += 60_000;
    await page.getByRole('link', { name: 'Continue' }).click();
    await page.waitForURL((u) => u.pathname === '/api/auth/login');
    await page.getByLabel('Username').fill('carl');
    await page.getByLabel('Password').fill(GOOD_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL((u) => u.pathname === '/api/auth/2fa');
    await page.getByLabel('Code').fill(await totpAt(secret, Date.now() + skew));
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.waitForURL(`${h.url}/secure/vault`);
    expect(await page.locator('main').textContent()).toContain('Signed in as carl');
    expect(errors.filter((e) => /Content Security Policy|Refused to/i.test(e))).toEqual([]);
    await context.close();
  });
});
