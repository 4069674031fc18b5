import { GatewayError } from '../errors/index.js';

/**
 * Every HTML page the gateway serves — sign-in, 2FA, sign-out, recovery codes and every error
 * page — rendered here, in one layout with one stylesheet and no script.
 */

/** Everything a page needs to know about the gateway. */
export interface PageContext {
  /** The gateway's display name (`name` in the config). */
  readonly name: string;
  /** `auth.prefix`: where the forms post and the stylesheet is served. */
  readonly prefix: string;
}

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
/** HTML-escapes text for element content and attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESC[c]);
}

/**
 * The colours of the two schemes, as CSS custom properties. `--focus` is the focus ring: it
 * must keep at least 3:1 contrast against `--bg` in both schemes (WCAG 2.2 SC 1.4.11), which
 * pages.test.ts computes from these very values.
 */
export const COLOURS = {
  light: { bg: '#ffffff', fg: '#1b1f24', focus: '#1a56db', border: '#6b7280', errorBg: '#fde8e8', errorFg: '#8a1111' },
  dark: { bg: '#15171c', fg: '#e8eaed', focus: '#ffb020', border: '#8b93a1', errorBg: '#3d1414', errorFg: '#ffc4c4' },
} as const;

function colourVars(c: (typeof COLOURS)[keyof typeof COLOURS]): string {
  return `--bg:${c.bg};--fg:${c.fg};--focus:${c.focus};--border:${c.border};--error-bg:${c.errorBg};--error-fg:${c.errorFg}`;
}

/**
 * The one stylesheet (served from `{prefix}/static/portcullis.css`; CSP allows 'self' styles
 * only). Readable at 390 px: no fixed width, `max-width` with `width: 100%`, border-box
 * sizing, long words wrap; a visible focus ring; light and dark schemes.
 */
export const STYLESHEET = `:root{color-scheme:light dark;${colourVars(COLOURS.light)};font-family:system-ui,-apple-system,"Segoe UI",sans-serif;line-height:1.45}
@media (prefers-color-scheme:dark){:root{${colourVars(COLOURS.dark)}}}
*,*::before,*::after{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;padding:1rem;background:var(--bg);color:var(--fg);overflow-wrap:anywhere}
main{width:100%;max-width:24rem;padding:1.5rem;border:1px solid var(--border);border-radius:12px}
h1{font-size:1.4rem;margin:0 0 1.2rem}
label{display:block;font-weight:600;margin:.9rem 0 .3rem}
input{width:100%;max-width:100%;padding:.55rem .6rem;font:inherit;color:var(--fg);background:var(--bg);border:1px solid var(--border);border-radius:6px}
button{margin-top:1.4rem;width:100%;padding:.6rem;font:inherit;font-weight:600;border:0;border-radius:6px;background:#1f5fbf;color:#fff;cursor:pointer}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.error{padding:.6rem .8rem;border-radius:6px;background:var(--error-bg);color:var(--error-fg)}
.muted{opacity:.8;font-size:.9rem}
.back{display:flex;flex-wrap:wrap;gap:.5rem 1.2rem;margin-top:1.4rem}
code{overflow-wrap:anywhere;word-break:break-all}
ul{padding-left:1.2rem}
.qr svg{display:block;width:100%;max-width:16rem;height:auto}
img,svg{max-width:100%}
a{color:inherit}
main.wide{max-width:40rem}
h2{font-size:1.1rem;margin:1.8rem 0 .4rem}
section{border-top:1px solid var(--border);margin-top:1.6rem}
.notice{padding:.6rem .8rem;border-radius:6px;border:1px solid var(--border)}
.sessions{list-style:none;padding:0;margin:0}
.sessions li{padding:.7rem 0;border-bottom:1px solid var(--border)}
.sessions li:last-child{border-bottom:0}
.sessions form{display:inline}
.inline{margin-top:.5rem;width:auto;padding:.35rem .9rem}
.badge{display:inline-block;padding:0 .4rem;border:1px solid var(--border);border-radius:4px;font-size:.85rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem;margin:0}
dt{font-weight:600}
dd{margin:0}
@media print{nav,form,.no-print{display:none!important}main{border:0;max-width:none}body{display:block}}`;

/**
 * A wait in words, rounded to what a person needs: "less than a minute" (under 60 s), "about
 * 1 minute", "about 14 minutes" (to the nearest minute), "about 2 hours" (from 59½ minutes on,
 * to the nearest hour).
 */
export function humanDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 60) return 'less than a minute';
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return minutes === 1 ? 'about 1 minute' : `about ${minutes} minutes`;
  const hours = Math.round(seconds / 3600);
  return hours === 1 ? 'about 1 hour' : `about ${hours} hours`;
}

/** What a person is told on a 423 or 429 page, with the wait in words. */
const WAIT_WORDING: Record<number, string> = {
  423: 'Too many failed attempts for this account.',
  429: 'Too many requests from your connection.',
};

/**
 * The error as a page says it: a 423 or 429 with a `Retry-After` in seconds gets human wording
 * ("Try again in about 14 minutes."); anything else is returned as is. Only the HTML wording
 * changes: the problem+json body and the headers keep the error's own.
 */
export function forPeople(err: GatewayError, retryAfter: string | number | undefined): GatewayError {
  const lead = WAIT_WORDING[err.status];
  if (lead === undefined || retryAfter === undefined) return err;
  const text = String(retryAfter).trim();
  if (!/^\d+$/.test(text)) return err;
  return new GatewayError(err.def, `${lead} Try again in ${humanDuration(Number(text))}.`, {
    extra: err.extra,
    headers: err.headers,
    log: err.log,
    cause: err.cause,
  });
}

/** A link on a page (e.g. back to the sign-in form). */
export interface PageLink {
  readonly href: string;
  readonly text: string;
}

/** The links every page can end with, by name. */
export type SiteLink = 'home' | 'account' | 'signOut';

/** `{prefix}/account`: the self-service page, linked from every page. */
export const accountPath = (ctx: PageContext): string => `${ctx.prefix}/account`;

function siteLink(ctx: PageContext, l: SiteLink): PageLink {
  if (l === 'home') return { href: '/', text: 'Home' };
  if (l === 'account') return { href: accountPath(ctx), text: 'Your account' };
  return { href: `${ctx.prefix}/logout`, text: 'Sign out' };
}

/** How a page ends: its own links first, then the named site links, under one `nav`. */
export interface PageNav {
  readonly links?: readonly PageLink[];
  readonly site: readonly SiteLink[];
  /** The nav's accessible name. @default "More" */
  readonly label?: string;
}

/**
 * The one layout: viewport, the one stylesheet, no script and no inline style; `nav` ends the
 * page with plain links (home, your account, sign out) so no page is a dead end.
 */
export function layout(ctx: PageContext, title: string, body: string, nav: PageNav, opts: { wide?: boolean } = {}): string {
  const links = [...(nav.links ?? []), ...nav.site.map((l) => siteLink(ctx, l))];
  const navHtml = links.length
    ? `\n<nav class="back" aria-label="${escapeHtml(nav.label ?? 'More')}">${links.map((l) => `<a href="${escapeHtml(l.href)}">${escapeHtml(l.text)}</a>`).join(' ')}</nav>`
    : '';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${escapeHtml(title)} · ${escapeHtml(ctx.name)}</title>
<link rel="stylesheet" href="${escapeHtml(ctx.prefix)}/static/portcullis.css">
</head>
<body>
<main${opts.wide ? ' class="wide"' : ''}>
${body}${navHtml}
</main>
</body>
</html>
`;
}

/** The sign-in form: server-rendered, labelled fields, no script. */
export function loginPage(ctx: PageContext, opts: { rd: string; error?: string; username?: string }): string {
  const error = opts.error ? `<p class="error" role="alert" id="login-error">${escapeHtml(opts.error)}</p>` : '';
  return layout(
    ctx,
    'Sign in',
    `<h1>Sign in to ${escapeHtml(ctx.name)}</h1>
${error}
<form method="post" action="${escapeHtml(ctx.prefix)}/login"${opts.error ? ' aria-describedby="login-error"' : ''}>
<input type="hidden" name="rd" value="${escapeHtml(opts.rd)}">
<label for="username">Username</label>
<input id="username" name="username" type="text" autocomplete="username" autocapitalize="none" spellcheck="false" required maxlength="64" value="${escapeHtml(opts.username ?? '')}"${opts.username ? '' : ' autofocus'}>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required maxlength="1024"${opts.username ? ' autofocus' : ''}>
<button type="submit">Sign in</button>
</form>`,
    { site: ['home', 'account'] },
  );
}

/** The sign-out confirmation: a form, because signing out changes state (never a GET). */
export function logoutPage(ctx: PageContext, opts: { signedInAs: string | null }): string {
  const who = opts.signedInAs ? `<p>Signed in as <strong>${escapeHtml(opts.signedInAs)}</strong>.</p>` : '<p class="muted">You are not signed in.</p>';
  return layout(
    ctx,
    'Sign out',
    `<h1>Sign out</h1>
${who}
<form method="post" action="${escapeHtml(ctx.prefix)}/logout">
<button type="submit">Sign out</button>
</form>`,
    { site: ['home', 'account'] },
  );
}

/**
 * The error page: title, detail, status and code (the same facts as the problem+json body,
 * never a stack), and always a way back as plain links: `link` first when given (e.g. back to
 * the sign-in form), then "Home" (`/`), "Your account" and "Sign out" (`{prefix}/logout`, the sign-out
 * confirmation, which also says when nobody is signed in). The sign-out link is shown whether
 * or not the visitor is signed in: the responder does not look at sessions.
 */
export function errorPage(ctx: PageContext, err: Pick<GatewayError, 'status' | 'title' | 'message' | 'code'>, link?: PageLink): string {
  return layout(
    ctx,
    err.title,
    `<h1>${escapeHtml(err.title)}</h1>
<p>${escapeHtml(err.message)}</p>
<p class="muted"><small>${err.status} · ${escapeHtml(err.code)}</small></p>`,
    { links: link ? [link] : [], site: ['home', 'account', 'signOut'], label: 'Ways back' },
  );
}

/** The code prompt of a two-step sign-in. */
export function mfaPage(ctx: PageContext, opts: { rd: string; error?: string }): string {
  const error = opts.error ? `<p class="error" role="alert" id="mfa-error">${escapeHtml(opts.error)}</p>` : '';
  return layout(
    ctx,
    'Two-factor authentication',
    `<h1>Enter your code</h1>
${error}
<p class="muted">Open your authenticator app, or use one of your recovery codes.</p>
<form method="post" action="${escapeHtml(ctx.prefix)}/2fa/verify"${opts.error ? ' aria-describedby="mfa-error"' : ''}>
<input type="hidden" name="rd" value="${escapeHtml(opts.rd)}">
<label for="code">Code</label>
<input id="code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" autocapitalize="none" spellcheck="false" required maxlength="32" autofocus>
<button type="submit">Verify</button>
</form>`,
    { site: ['home', 'account'] },
  );
}

/** Where the enrollment forms post: the sign-in flow's API routes, or the account page's. */
export interface EnrollActions {
  readonly setup: string;
  readonly enable: string;
}

/**
 * Enrollment, step 1 (a button: creating a secret changes state) or step 2 (QR + the key as
 * text + confirm with a code). `actions` defaults to `{prefix}/2fa/setup` and `/2fa/enable`.
 */
export function mfaSetupPage(
  ctx: PageContext,
  opts: {
    rd: string;
    setup?: { qrSvg: string; secret: string };
    error?: string;
    enabled?: boolean;
    actions?: EnrollActions;
    /** The confirm form sends the key back: proof that the sender was shown it (see MfaService.pendingSetup). */
    echoSecret?: boolean;
  },
): string {
  const nav: PageNav = { site: ['home', 'account', 'signOut'] };
  if (opts.enabled) {
    return layout(ctx, 'Two-factor authentication', `<h1>Two-factor authentication is on</h1>\n<p><a href="${escapeHtml(opts.rd)}">Continue</a></p>`, nav);
  }
  const actions = opts.actions ?? { setup: `${ctx.prefix}/2fa/setup`, enable: `${ctx.prefix}/2fa/enable` };
  const error = opts.error ? `<p class="error" role="alert" id="setup-error">${escapeHtml(opts.error)}</p>` : '';
  if (!opts.setup) {
    return layout(
      ctx,
      'Set up two-factor authentication',
      `<h1>Set up two-factor authentication</h1>
${error}
<p>This page needs a second factor. Set up an authenticator app (TOTP) to continue.</p>
<form method="post" action="${escapeHtml(actions.setup)}">
<input type="hidden" name="rd" value="${escapeHtml(opts.rd)}">
<button type="submit">Set up an authenticator</button>
</form>`,
      nav,
    );
  }
  // The QR code is server-made SVG markup (qrcode library output: paths only, no script).
  return layout(
    ctx,
    'Set up two-factor authentication',
    `<h1>Scan this code</h1>
${error}
<div class="qr" role="img" aria-label="QR code for your authenticator app">${opts.setup.qrSvg}</div>
<p class="muted">Or enter this key by hand: <code id="totp-secret">${escapeHtml(opts.setup.secret)}</code></p>
<form method="post" action="${escapeHtml(actions.enable)}">
<input type="hidden" name="rd" value="${escapeHtml(opts.rd)}">${opts.echoSecret ? `\n<input type="hidden" name="secret" value="${escapeHtml(opts.setup.secret)}">` : ''}
<label for="code">Code from the app</label>
<input id="code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" required maxlength="6" autofocus${opts.error ? ' aria-describedby="setup-error"' : ''}>
<button type="submit">Turn on</button>
</form>`,
    nav,
  );
}

/**
 * The recovery codes as a text file, for the page's download link: a `data:` URL needs no
 * script and no server copy of the codes (they are stored hashed only).
 */
export function recoveryCodesDownload(ctx: PageContext, codes: readonly string[], username?: string): string {
  const text = `Recovery codes for ${ctx.name}${username ? ` (${username})` : ''}\nEach code signs you in once. Keep them somewhere safe.\n\n${codes.join('\n')}\n`;
  return `data:text/plain;charset=utf-8,${encodeURIComponent(text)}`;
}

/**
 * Recovery codes, shown once: a list, a download link (a text file) and a page that prints
 * cleanly (the print styles hide forms and links).
 */
export function recoveryCodesPage(ctx: PageContext, opts: { rd: string; codes: string[]; username?: string }): string {
  return layout(
    ctx,
    'Recovery codes',
    `<h1>Save your recovery codes</h1>
<p>Each code signs you in once if you lose your authenticator. They are shown only now: download them, print this page or write them down.</p>
<ul id="recovery-codes">${opts.codes.map((c) => `<li><code>${escapeHtml(c)}</code></li>`).join('')}</ul>
<p class="no-print"><a id="download-codes" href="${escapeHtml(recoveryCodesDownload(ctx, opts.codes, opts.username))}" download="recovery-codes.txt">Download as a text file</a></p>
<p class="no-print"><a href="${escapeHtml(opts.rd)}">Continue</a></p>`,
    { site: ['home', 'account', 'signOut'] },
  );
}
