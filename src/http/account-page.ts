import type { SessionView } from '../auth/index.js';
import { describeDevice } from './device.js';
import { escapeHtml, humanDuration, layout, type PageContext } from './pages.js';

/**
 * The self-service account page (`GET {prefix}/account`): who you are, your sessions, your
 * password and your second factor. Plain forms (no script); each posts to its own route under
 * `{prefix}/account/` (account-routes.ts), which answers with a redirect back here and a notice,
 * or this page again with the error beside the form it concerns.
 */

/** The parts of the page a form's error is shown in. */
export type AccountSection = 'sessions' | 'password' | 'mfa' | 'recovery';

/** A form's error, shown inline in its section. */
export interface AccountError {
  readonly section: AccountSection;
  readonly message: string;
  /** Itemised reasons (a rejected new password's policy reasons), shown instead of the message. */
  readonly reasons?: readonly string[];
}

/** What the page shows. */
export interface AccountView {
  readonly user: { readonly username: string; readonly email: string | null; readonly roles: readonly string[]; readonly mfaEnabled: boolean };
  readonly sessions: readonly SessionView[];
  readonly now: Date;
  /** A notice after a change (from a fixed list, never from the URL as text). */
  readonly notice?: string;
  readonly error?: AccountError;
}

/** Where each account form posts, under `{prefix}`. */
export const ACCOUNT_FORMS = {
  revokeSession: '/account/sessions/revoke',
  revokeOthers: '/account/sessions/revoke-others',
  password: '/account/password',
  mfaSetup: '/account/2fa/setup',
  mfaEnable: '/account/2fa/enable',
  mfaDisable: '/account/2fa/disable',
  recoveryCodes: '/account/recovery-codes',
} as const;

/** The notices a change redirects back with (`?done=<key>`); unknown keys show nothing. */
export const ACCOUNT_NOTICES: Readonly<Record<string, string>> = {
  session_revoked: 'That session is signed out.',
  others_signed_out: 'Every other session is signed out.',
  password_changed: 'Your password is changed. Every other session is signed out.',
  mfa_enabled: 'Two-factor authentication is on. Sessions signed in before keep working: “Sign out everywhere else” ends them.',
  mfa_disabled: 'Two-factor authentication is off.',
};

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** "28 Nov 2026, 13:59 UTC" in a `<time>` element carrying the exact instant. */
function timeTag(iso: string): string {
  const d = new Date(iso);
  const hh = String(d.getUTCHours()).padStart(2, '0');
  const mm = String(d.getUTCMinutes()).padStart(2, '0');
  return `<time datetime="${escapeHtml(d.toISOString())}">${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()}, ${hh}:${mm} UTC</time>`;
}

/** "about 3 minutes ago", "less than a minute ago". */
function ago(now: Date, iso: string): string {
  return `${humanDuration(Math.max(0, (now.getTime() - new Date(iso).getTime()) / 1000))} ago`;
}

function errorSlot(view: AccountView, section: AccountSection): { html: string; describedBy: string } {
  const e = view.error;
  if (!e || e.section !== section) return { html: '', describedBy: '' };
  const id = `${section}-error`;
  // Itemised reasons replace the message (which joins the same reasons into one sentence).
  const text = e.reasons?.length
    ? `<p>Choose another new password:</p><ul>${e.reasons.map((r) => `<li>${escapeHtml(r)}</li>`).join('')}</ul>`
    : `<p>${escapeHtml(e.message)}</p>`;
  return { html: `<div class="error" role="alert" id="${id}">${text}</div>\n`, describedBy: ` aria-describedby="${id}"` };
}

function sessionsSection(ctx: PageContext, view: AccountView): string {
  const err = errorSlot(view, 'sessions');
  // This device first, then the others newest first (the order they come in).
  const sessions = [...view.sessions.filter((s) => s.current), ...view.sessions.filter((s) => !s.current)];
  const items = sessions.map((s, i) => {
    const facts = [
      s.ip ? `IP ${escapeHtml(s.ip)}` : null,
      `signed in on ${timeTag(s.created_at)}`,
      `last active ${ago(view.now, s.last_seen_at)}`,
      s.amr.includes('otp') ? 'with a second factor' : null,
    ].filter(Boolean);
    const action = s.current
      ? `<p class="muted">This is the session you are using now. <a href="${escapeHtml(ctx.prefix)}/logout">Sign out</a></p>`
      : `<form method="post" action="${escapeHtml(ctx.prefix + ACCOUNT_FORMS.revokeSession)}">
<input type="hidden" name="session_id" value="${escapeHtml(s.id)}">
<button class="inline" type="submit" aria-describedby="session-${i}">Sign out this session</button>
</form>`;
    return `<li data-session-id="${escapeHtml(s.id)}"${s.current ? ' aria-current="true"' : ''}>
<p id="session-${i}"><strong>${escapeHtml(describeDevice(s.user_agent))}</strong>${s.current ? ' <span class="badge">This device</span>' : ''}<br>
<span class="muted">${facts.join(' · ')}</span></p>
${action}
</li>`;
  });
  const others = view.sessions.some((s) => !s.current)
    ? `<form method="post" action="${escapeHtml(ctx.prefix + ACCOUNT_FORMS.revokeOthers)}">
<button type="submit">Sign out everywhere else</button>
</form>`
    : '<p class="muted">You are not signed in anywhere else.</p>';
  return `<section aria-labelledby="sessions-h">
<h2 id="sessions-h">Where you are signed in</h2>
${err.html}<ul class="sessions" id="sessions">
${items.join('\n')}
</ul>
${others}
</section>`;
}

function passwordSection(ctx: PageContext, view: AccountView): string {
  const err = errorSlot(view, 'password');
  return `<section aria-labelledby="password-h">
<h2 id="password-h">Change your password</h2>
${err.html}<form method="post" action="${escapeHtml(ctx.prefix + ACCOUNT_FORMS.password)}"${err.describedBy}>
<label for="current-password">Current password</label>
<input id="current-password" name="current_password" type="password" autocomplete="current-password" required maxlength="1024">
<label for="new-password">New password</label>
<input id="new-password" name="new_password" type="password" autocomplete="new-password" required minlength="12" maxlength="128" aria-describedby="new-password-hint">
<p class="muted" id="new-password-hint">12 to 128 characters, hard to guess, not containing your username. A few unrelated words work well.</p>
<label for="confirm-password">New password again</label>
<input id="confirm-password" name="confirm_password" type="password" autocomplete="new-password" required maxlength="128">
<button type="submit">Change password</button>
</form>
<p class="muted">Changing it signs out every other session.</p>
</section>`;
}

function mfaSection(ctx: PageContext, view: AccountView): string {
  const err = errorSlot(view, 'mfa');
  if (!view.user.mfaEnabled) {
    return `<section aria-labelledby="mfa-h">
<h2 id="mfa-h">Two-factor authentication</h2>
${err.html}<p>Off. With it on, signing in also asks for a code from an authenticator app on your phone.</p>
<form method="post" action="${escapeHtml(ctx.prefix + ACCOUNT_FORMS.mfaSetup)}">
<button type="submit">Turn on two-factor authentication</button>
</form>
</section>`;
  }
  return `<section aria-labelledby="mfa-h">
<h2 id="mfa-h">Two-factor authentication</h2>
${err.html}<p>On. To turn it off, confirm with your password and a code from your authenticator app (or a recovery code).</p>
<form method="post" action="${escapeHtml(ctx.prefix + ACCOUNT_FORMS.mfaDisable)}"${err.describedBy}>
<label for="disable-password">Password</label>
<input id="disable-password" name="password" type="password" autocomplete="current-password" required maxlength="1024">
<label for="disable-code">Code</label>
<input id="disable-code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" autocapitalize="none" spellcheck="false" required maxlength="32">
<button type="submit">Turn off two-factor authentication</button>
</form>
</section>`;
}

function recoverySection(ctx: PageContext, view: AccountView): string {
  if (!view.user.mfaEnabled) return '';
  const err = errorSlot(view, 'recovery');
  return `<section aria-labelledby="recovery-h">
<h2 id="recovery-h">Recovery codes</h2>
${err.html}<p>New codes replace all your old ones. Confirm with a code from your authenticator app, or with your password.</p>
<form method="post" action="${escapeHtml(ctx.prefix + ACCOUNT_FORMS.recoveryCodes)}"${err.describedBy}>
<label for="recovery-code">Code from your app</label>
<input id="recovery-code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" autocapitalize="none" spellcheck="false" maxlength="6">
<label for="recovery-password">or your password</label>
<input id="recovery-password" name="password" type="password" autocomplete="current-password" maxlength="1024">
<button type="submit">Get new recovery codes</button>
</form>
</section>`;
}

/** The account page. */
export function accountPage(ctx: PageContext, given: AccountView): string {
  // With 2FA off the recovery section is not drawn: its form's error (sent from a page drawn
  // while 2FA was on) is shown in the 2FA section instead, never dropped.
  const view = given.error?.section === 'recovery' && !given.user.mfaEnabled ? { ...given, error: { ...given.error, section: 'mfa' as const } } : given;
  const { user } = view;
  const notice = view.notice ? `<p class="notice" role="status">${escapeHtml(view.notice)}</p>\n` : '';
  const roles = user.roles.length ? user.roles.map(escapeHtml).join(', ') : '<span class="muted">none</span>';
  return layout(
    ctx,
    'Your account',
    `<h1>Your account</h1>
${notice}<dl id="who">
<dt>Username</dt><dd>${escapeHtml(user.username)}</dd>
<dt>Email</dt><dd>${user.email ? escapeHtml(user.email) : '<span class="muted">none</span>'}</dd>
<dt>Roles</dt><dd>${roles}</dd>
<dt>Two-factor</dt><dd>${user.mfaEnabled ? 'On' : 'Off'}</dd>
</dl>
${sessionsSection(ctx, view)}
${passwordSection(ctx, view)}
${mfaSection(ctx, view)}
${recoverySection(ctx, view)}`,
    { site: ['home', 'signOut'] },
    { wide: true },
  );
}
