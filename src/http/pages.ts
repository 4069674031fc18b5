import type { GatewayError } from '../errors/index.js';

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

/** The one stylesheet (served from `{prefix}/static/portcullis.css`; CSP allows 'self' styles only). */
export const STYLESHEET = `:root{color-scheme:light dark;font-family:system-ui,-apple-system,"Segoe UI",sans-serif}
body{margin:0;min-height:100vh;display:grid;place-items:center;background:Canvas;color:CanvasText}
main{width:min(22rem,90vw);padding:2rem;border:1px solid color-mix(in srgb,CanvasText 20%,transparent);border-radius:12px}
h1{font-size:1.4rem;margin:0 0 1.2rem}
label{display:block;font-weight:600;margin:.9rem 0 .3rem}
input{box-sizing:border-box;width:100%;padding:.55rem .6rem;font:inherit;border:1px solid color-mix(in srgb,CanvasText 35%,transparent);border-radius:6px}
button{margin-top:1.4rem;width:100%;padding:.6rem;font:inherit;font-weight:600;border:0;border-radius:6px;background:#1f5fbf;color:#fff;cursor:pointer}
button:focus-visible,input:focus-visible{outline:3px solid #f0a000;outline-offset:2px}
.error{padding:.6rem .8rem;border-radius:6px;background:#fde8e8;color:#8a1111}
.muted{opacity:.75;font-size:.9rem}
a{color:inherit}`;

function layout(ctx: PageContext, title: string, body: string): string {
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
<main>
${body}
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
</form>
<p class="muted"><a href="/">Back</a></p>`,
  );
}

/** A link on an error page (e.g. back to the sign-in form). */
export interface PageLink {
  readonly href: string;
  readonly text: string;
}

/**
 * The error page: title, detail, status and code (the same facts as the problem+json body,
 * never a stack), and optionally a way back.
 */
export function errorPage(ctx: PageContext, err: Pick<GatewayError, 'status' | 'title' | 'message' | 'code'>, link?: PageLink): string {
  return layout(
    ctx,
    err.title,
    `<h1>${escapeHtml(err.title)}</h1>
<p>${escapeHtml(err.message)}</p>
<p class="muted"><small>${err.status} · ${escapeHtml(err.code)}</small></p>${link ? `\n<p><a href="${escapeHtml(link.href)}">${escapeHtml(link.text)}</a></p>` : ''}`,
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
  );
}

/** Enrollment, step 1 (a button: creating a secret changes state) or step 2 (QR + confirm). */
export function mfaSetupPage(ctx: PageContext, opts: { rd: string; setup?: { qrSvg: string; secret: string }; error?: string; enabled?: boolean }): string {
  if (opts.enabled) {
    return layout(ctx, 'Two-factor authentication', `<h1>Two-factor authentication is on</h1>\n<p><a href="${escapeHtml(opts.rd)}">Continue</a></p>`);
  }
  const error = opts.error ? `<p class="error" role="alert">${escapeHtml(opts.error)}</p>` : '';
  if (!opts.setup) {
    return layout(
      ctx,
      'Set up two-factor authentication',
      `<h1>Set up two-factor authentication</h1>
${error}
<p>This page needs a second factor. Set up an authenticator app (TOTP) to continue.</p>
<form method="post" action="${escapeHtml(ctx.prefix)}/2fa/setup">
<input type="hidden" name="rd" value="${escapeHtml(opts.rd)}">
<button type="submit">Set up an authenticator</button>
</form>`,
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
<form method="post" action="${escapeHtml(ctx.prefix)}/2fa/enable">
<input type="hidden" name="rd" value="${escapeHtml(opts.rd)}">
<label for="code">Code from the app</label>
<input id="code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" required maxlength="6" autofocus>
<button type="submit">Turn on</button>
</form>`,
  );
}

/** Recovery codes, shown once. */
export function recoveryCodesPage(ctx: PageContext, opts: { rd: string; codes: string[] }): string {
  return layout(
    ctx,
    'Recovery codes',
    `<h1>Save your recovery codes</h1>
<p>Each code signs you in once if you lose your authenticator. They are shown only now.</p>
<ul id="recovery-codes">${opts.codes.map((c) => `<li><code>${escapeHtml(c)}</code></li>`).join('')}</ul>
<p><a href="${escapeHtml(opts.rd)}">Continue</a></p>`,
  );
}
