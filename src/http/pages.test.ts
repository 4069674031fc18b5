import { describe, expect, it } from 'vitest';
import { Errors, GatewayError } from '../errors/index.js';
import { accountPage, type AccountView } from './account-page.js';
import {
  COLOURS,
  STYLESHEET,
  errorPage,
  forPeople,
  humanDuration,
  loginPage,
  mfaPage,
  mfaSetupPage,
  recoveryCodesDownload,
  recoveryCodesPage,
} from './pages.js';

const ctx = { name: 'Portcullis', prefix: '/api/auth' };

/** WCAG 2.x relative luminance of a `#rrggbb` colour. */
function luminance(hex: string): number {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  if (!m) throw new Error(`not #rrggbb: ${hex}`);
  const [r, g, b] = m.slice(1).map((h) => {
    const c = Number.parseInt(h, 16) / 255;
    return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

/** WCAG contrast ratio of two colours. */
function contrast(a: string, b: string): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

/** The custom properties a CSS block sets (`--name:value`). */
function vars(block: string): Record<string, string> {
  return Object.fromEntries([...block.matchAll(/--([a-z-]+):(#[0-9a-f]{6})/gi)].map((m) => [m[1], m[2]]));
}

/** Each `<input>` other than hidden/submit has an id and a `<label for>` naming it. */
function unlabelledInputs(html: string): string[] {
  const labels = new Set([...html.matchAll(/<label for="([^"]+)">/g)].map((m) => m[1]));
  const bad: string[] = [];
  for (const [tag] of html.matchAll(/<input\b[^>]*>/g)) {
    const type = /\stype="([^"]*)"/.exec(tag)?.[1] ?? 'text';
    if (type === 'hidden' || type === 'submit') continue;
    const id = /\sid="([^"]+)"/.exec(tag)?.[1];
    if (!id || !labels.has(id)) bad.push(tag);
  }
  return bad;
}

describe('humanDuration', () => {
  it.each([
    [0, 'less than a minute'],
    [1, 'less than a minute'],
    [59, 'less than a minute'],
    [60, 'about 1 minute'],
    [89, 'about 1 minute'],
    [90, 'about 2 minutes'],
    [838, 'about 14 minutes'],
    [900, 'about 15 minutes'],
    [3569, 'about 59 minutes'],
    [3570, 'about 1 hour'],
    [5399, 'about 1 hour'],
    [5400, 'about 2 hours'],
    [7200, 'about 2 hours'],
    [86400, 'about 24 hours'],
    [Number.NaN, 'less than a minute'],
    [-5, 'less than a minute'],
  ])('%s s → %s', (s, words) => {
    expect(humanDuration(s)).toBe(words);
  });
});

describe('the stylesheet', () => {
  it('the focus ring has at least 3:1 contrast against the background in both schemes (from the CSS itself)', () => {
    const light = vars(STYLESHEET.slice(STYLESHEET.indexOf(':root{'), STYLESHEET.indexOf('}')));
    const darkStart = STYLESHEET.indexOf('@media (prefers-color-scheme:dark)');
    expect(darkStart).toBeGreaterThan(-1);
    const dark = vars(STYLESHEET.slice(darkStart, STYLESHEET.indexOf('}}', darkStart)));
    expect(STYLESHEET).toContain(':focus-visible{outline:3px solid var(--focus)');
    for (const [scheme, v] of [
      ['light', light],
      ['dark', dark],
    ] as const) {
      expect(v.focus, scheme).toBe(COLOURS[scheme].focus);
      expect(v.bg, scheme).toBe(COLOURS[scheme].bg);
      expect(contrast(v.focus, v.bg), `${scheme} focus`).toBeGreaterThanOrEqual(3);
      // Text and the error box stay readable too (4.5:1, WCAG AA for body text).
      expect(contrast(v.fg, v.bg), `${scheme} text`).toBeGreaterThanOrEqual(4.5);
      expect(contrast(v['error-fg'], v['error-bg']), `${scheme} error`).toBeGreaterThanOrEqual(4.5);
      expect(contrast(v.border, v.bg), `${scheme} input border`).toBeGreaterThanOrEqual(3);
    }
    // The luminance helper itself, on the textbook pair.
    expect(contrast('#000000', '#ffffff')).toBeCloseTo(21, 5);
  });

  it('has no fixed width over 390 px, wraps long words and sizes by border-box', () => {
    for (const m of STYLESHEET.matchAll(/(?:^|[;{])(?:min-)?width:([^;}]+)/g)) {
      const v = m[1].trim();
      const px = /^(\d+(?:\.\d+)?)px$/.exec(v);
      const rem = /^(\d+(?:\.\d+)?)rem$/.exec(v);
      if (px) expect(Number(px[1]), v).toBeLessThanOrEqual(390);
      if (rem) expect(Number(rem[1]) * 16, v).toBeLessThanOrEqual(390);
    }
    expect(STYLESHEET).toMatch(/main\{width:100%;max-width:24rem/);
    expect(STYLESHEET).toContain('overflow-wrap:anywhere');
    expect(STYLESHEET).toContain('box-sizing:border-box');
  });
});

describe('labels on every input', () => {
  it('sign-in, 2FA prompt and 2FA set-up pages', () => {
    const pages = [
      loginPage(ctx, { rd: '/' }),
      loginPage(ctx, { rd: '/', error: 'x', username: 'bob' }),
      mfaPage(ctx, { rd: '/' }),
      mfaSetupPage(ctx, { rd: '/' }),
      mfaSetupPage(ctx, { rd: '/', setup: { qrSvg: '<svg></svg>', secret: 'ABC' } }),
    ];
    for (const html of pages) expect(unlabelledInputs(html)).toEqual([]);
    // The checker does catch an unlabelled input.
    expect(unlabelledInputs('<input id="a" type="text"><input type="hidden" name="rd">')).toHaveLength(1);
  });
});

describe('error pages', () => {
  it('carry the viewport, the stylesheet and a way back (home and sign out), after a given link', () => {
    const html = errorPage(ctx, new GatewayError(Errors.no_route), { href: '/api/auth/login', text: 'Back to sign in' });
    expect(html).toContain('<meta name="viewport" content="width=device-width, initial-scale=1">');
    expect(html).toContain('<link rel="stylesheet" href="/api/auth/static/portcullis.css">');
    expect(html).toContain(
      '<a href="/api/auth/login">Back to sign in</a> <a href="/">Home</a> <a href="/api/auth/account">Your account</a> <a href="/api/auth/logout">Sign out</a>',
    );
  });

  it('forPeople words the wait of a 423 or 429 from Retry-After, and leaves the rest alone', () => {
    const locked = new GatewayError(Errors.account_locked, 'Too many failed attempts; try again in 838 s.', { headers: { 'retry-after': '838' } });
    const worded = forPeople(locked, '838');
    expect(worded.message).toBe('Too many failed attempts for this account. Try again in about 14 minutes.');
    expect(worded).toMatchObject({ status: 423, code: 'account_locked', headers: { 'retry-after': '838' } });
    expect(forPeople(new GatewayError(Errors.rate_limited, 'slow down'), 42).message).toBe(
      'Too many requests from your connection. Try again in less than a minute.',
    );
    expect(forPeople(new GatewayError(Errors.rate_limited, 'slow down'), undefined).message).toBe('slow down');
    expect(forPeople(new GatewayError(Errors.rate_limited, 'slow down'), 'Wed, 21 Oct 2015 07:28:00 GMT').message).toBe('slow down');
    const other = new GatewayError(Errors.service_unavailable, 'try again shortly', { headers: { 'retry-after': '2' } });
    expect(forPeople(other, '2')).toBe(other);
  });
});

describe('the account page', () => {
  const now = new Date('2026-11-28T12:00:00Z');
  const session = (id: string, current: boolean, userAgent: string | null, minutesAgo: number) => ({
    id,
    current,
    amr: current ? ['pwd', 'otp'] : ['pwd'],
    created_at: new Date(now.getTime() - 3 * 3600_000).toISOString(),
    last_seen_at: new Date(now.getTime() - minutesAgo * 60_000).toISOString(),
    expires_at: new Date(now.getTime() + 3600_000).toISOString(),
    user_agent: userAgent,
    ip: '203.0.113.7',
  });
  const view = (mfaEnabled: boolean, extra: Partial<AccountView> = {}): AccountView => ({
    user: { username: 'dana', email: 'dana@example.com', roles: ['staff'], mfaEnabled },
    sessions: [session('s-other', false, 'curl/8.0', 14), session('s-this', true, 'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0', 0)],
    now,
    ...extra,
  });

  it('labels every input, with 2FA off and on, with and without errors; so do the recovery codes page', () => {
    const pages = [
      accountPage(ctx, view(false)),
      accountPage(ctx, view(true)),
      accountPage(ctx, view(true, { error: { section: 'recovery', message: 'x' } })),
      accountPage(ctx, view(false, { error: { section: 'password', message: 'x', reasons: ['a', 'b'] } })),
      recoveryCodesPage(ctx, { rd: '/api/auth/account', codes: ['AAAA-BBBB-CCCC-DDDD'] }),
    ];
    for (const html of pages) {
      expect(unlabelledInputs(html)).toEqual([]);
      expect(html.toLowerCase()).not.toContain('<script');
      expect(html).not.toMatch(/\sstyle=|\son[a-z]+=/i);
    }
    // Ids are unique on the page (labels point at exactly one input).
    const ids = [...accountPage(ctx, view(true)).matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('lists this device first, with no revoke button of its own; the others each have one', () => {
    const html = accountPage(ctx, view(false));
    expect(html.indexOf('data-session-id="s-this"')).toBeLessThan(html.indexOf('data-session-id="s-other"'));
    expect(html).toContain('<strong>Firefox on Linux</strong> <span class="badge">This device</span>');
    expect(html).not.toContain('name="session_id" value="s-this"');
    expect(html).toContain('name="session_id" value="s-other"');
    expect(html).toContain('last active about 14 minutes ago');
    expect(html).toContain('<time datetime="2026-11-28T09:00:00.000Z">28 Nov 2026, 09:00 UTC</time>');
    expect(html).toContain('Sign out everywhere else');
    const alone = accountPage(ctx, view(false, { sessions: [session('s-this', true, null, 0)] }));
    expect(alone).not.toContain('Sign out everywhere else');
    expect(alone).toContain('Unknown device');
  });

  it('shows the 2FA forms that fit the state: turn on when off; turn off and new codes when on', () => {
    const off = accountPage(ctx, view(false));
    expect(off).toContain('action="/api/auth/account/2fa/setup"');
    expect(off).not.toContain('action="/api/auth/account/2fa/disable"');
    expect(off).not.toContain('action="/api/auth/account/recovery-codes"');
    const on = accountPage(ctx, view(true));
    expect(on).not.toContain('action="/api/auth/account/2fa/setup"');
    expect(on).toContain('action="/api/auth/account/2fa/disable"');
    expect(on).toContain('action="/api/auth/account/recovery-codes"');
  });

  it('escapes every value it shows, and lists policy reasons in place of the joined message', () => {
    const evil = '<img src=x onerror=alert(1)>';
    const html = accountPage(ctx, {
      ...view(false),
      user: { username: evil, email: `"${evil}`, roles: [evil], mfaEnabled: false },
      sessions: [{ ...session(`"><b>`, false, evil, 1), ip: evil }],
      notice: evil,
      error: { section: 'password', message: evil, reasons: [evil] },
    });
    expect(html).not.toContain('<img');
    expect(html).not.toContain('"><b>');
    expect(html).toContain('&lt;img src=x onerror=alert(1)&gt;');
    expect(html).toContain('<p>Choose another new password:</p><ul><li>&lt;img');
  });

  it('the download link is a data: URL holding every code', () => {
    const codes = ['AAAA-BBBB-CCCC-DDDD', 'EEEE-FFFF-GGGG-HHHH'];
    const href = recoveryCodesDownload(ctx, codes, 'dana');
    expect(href.startsWith('data:text/plain;charset=utf-8,')).toBe(true);
    const text = decodeURIComponent(href.slice(href.indexOf(',') + 1));
    expect(text).toContain('Recovery codes for Portcullis (dana)');
    for (const c of codes) expect(text).toContain(c);
    expect(recoveryCodesPage(ctx, { rd: '/', codes })).toContain('download="recovery-codes.txt"');
  });
});
