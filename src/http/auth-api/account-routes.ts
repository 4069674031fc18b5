import express, { type Request, type RequestHandler, type Response } from 'express';
import { Errors, GatewayError, is, type ErrorDef } from '../../errors/index.js';
import { ACCOUNT_FORMS, ACCOUNT_NOTICES, accountPage, type AccountSection, type AccountView } from '../account-page.js';
import { accountPath, errorPage, mfaSetupPage, recoveryCodesPage } from '../pages.js';
import { appendCookies, bodyParsers, isForm, requireAuth, seeOther, wrap, type Authed, type RouterDeps } from './kit.js';

/** Errors a form's section explains beside the form; anything else gets the error page. */
const SHOWN_INLINE: readonly ErrorDef[] = [
  Errors.invalid_input,
  Errors.wrong_password,
  Errors.weak_password,
  Errors.invalid_mfa_code,
  Errors.account_locked,
  Errors.session_not_found,
  Errors.mfa_not_set_up,
  Errors.mfa_already_enabled,
];

/**
 * What the page says for errors whose API wording names endpoints or assumes an API client
 * ("Call /2fa/setup first."); the problem+json keeps the API's words.
 */
const PAGE_WORDING: readonly [ErrorDef, string][] = [
  [
    Errors.mfa_not_set_up,
    'Two-factor authentication is off (perhaps changed in another window). To turn it on, start with “Turn on two-factor authentication”.',
  ],
  [Errors.mfa_already_enabled, 'Two-factor authentication is already on (perhaps turned on in another window).'],
  [Errors.session_not_found, 'That session is already signed out, or is not one of yours.'],
];

/** A form field as a string ('' when absent or not a string: url-encoded forms send strings). */
const field = (body: unknown, name: string): string => {
  const v = typeof body === 'object' && body !== null ? (body as Record<string, unknown>)[name] : undefined;
  return typeof v === 'string' ? v : '';
};

const invalid = (message: string, fields: readonly string[]) =>
  new GatewayError(Errors.invalid_input, message, { extra: { errors: fields.map((f) => ({ field: f, message: 'invalid' })) } });

/**
 * The self-service account page (SPEC §4 `GET /account`) and its forms. Every form is a plain
 * url-encoded POST to its own route under `{prefix}/account/`: the body parser refuses a form
 * that did not come from a page of this site (403 `csrf`) before reading it, and any other
 * content type is 415. A change answers 303 back to the page with a notice (post/redirect/get);
 * a refusal shows the page again with the reason beside its form, under the error's status.
 * A visitor who is not (or no longer) signed in is sent to sign in and back.
 */
export function accountRoutes(d: RouterDeps): express.Router {
  const { ctx } = d;
  const { body } = bodyParsers(ctx);
  const page = accountPath(ctx.pages);
  const r = express.Router();

  const formOnly: RequestHandler = (req, _res, next) =>
    isForm(req) ? next() : next(new GatewayError(Errors.unsupported_media_type, 'The account forms send application/x-www-form-urlencoded.'));

  const view = async (a: Authed, extra: Partial<AccountView> = {}): Promise<AccountView> => ({
    user: a.user,
    sessions: await d.auth.listSessions(a.user.id, a.identity.sid),
    now: d.now(),
    ...extra,
  });

  /** The signed-in caller, or null after sending a browser that is not signed in to sign in. */
  const signedIn = async (req: Request, res: Response): Promise<Authed | null> => {
    try {
      return await requireAuth(d, req, res);
    } catch (e) {
      if (!is(e, Errors.unauthenticated) && !is(e, Errors.invalid_token)) throw e;
      seeOther(ctx, res, ctx.signIn(page));
      return null;
    }
  };

  /** The page again, with `e` beside the form of `section`, under `e`'s status (logged once). */
  const refuse = async (req: Request, res: Response, a: Authed, section: AccountSection, e: unknown): Promise<void> => {
    if (!SHOWN_INLINE.some((def) => is(e, def))) {
      d.respond.send(req, res, e, { html: (err) => errorPage(ctx.pages, err, { href: page, text: 'Back to your account' }) });
      return;
    }
    // Reload the user: a refused change may still have changed nothing, but the page must say
    // what is true now (another tab may have turned 2FA on).
    const fresh = await d.auth.currentUser(a.identity);
    const v = await view({ ...a, user: fresh });
    d.respond.send(req, res, e, {
      html: (err) => {
        const reasons = (err.extra as { reasons?: unknown } | undefined)?.reasons;
        const message = PAGE_WORDING.find(([def]) => is(err, def))?.[1] ?? err.message;
        return accountPage(ctx.pages, { ...v, error: { section, message, reasons: Array.isArray(reasons) ? reasons.map(String) : undefined } });
      },
    });
  };

  /** One account form: signed in, then `fn`; errors it throws are shown in `section`. */
  const form = (path: string, section: AccountSection, fn: (a: Authed, req: Request, res: Response) => Promise<void>) =>
    r.post(
      path,
      formOnly,
      body,
      wrap(async (req, res) => {
        const a = await signedIn(req, res);
        if (!a) return;
        try {
          await fn(a, req, res);
        } catch (e) {
          await refuse(req, res, a, section, e);
        }
      }),
    );

  r.get(
    '/account',
    wrap(async (req, res) => {
      const a = await signedIn(req, res);
      if (!a) return;
      const done = typeof req.query.done === 'string' && Object.hasOwn(ACCOUNT_NOTICES, req.query.done) ? ACCOUNT_NOTICES[req.query.done] : undefined;
      res.type('html').send(accountPage(ctx.pages, await view(a, { notice: done })));
    }),
  );

  form(ACCOUNT_FORMS.revokeSession, 'sessions', async (a, req, res) => {
    const id = field(req.body, 'session_id');
    if (!id) throw invalid('Choose a session to sign out.', ['session_id']);
    await d.auth.revokeOwnSession(a.user.id, id);
    if (id === a.identity.sid) {
      // Signing out this very session is signing out.
      if (a.via === 'cookie') appendCookies(res, ctx.cookies.clear());
      seeOther(ctx, res, ctx.signIn(page));
      return;
    }
    seeOther(ctx, res, `${page}?done=session_revoked`);
  });

  form(ACCOUNT_FORMS.revokeOthers, 'sessions', async (a, _req, res) => {
    await d.auth.revokeUserSessions(a.user.id, 'signed_out_elsewhere', a.identity.sid);
    seeOther(ctx, res, `${page}?done=others_signed_out`);
  });

  form(ACCOUNT_FORMS.password, 'password', async (a, req, res) => {
    const current = field(req.body, 'current_password');
    const next = field(req.body, 'new_password');
    // Checked before the current password is tried: a typo here is not a guess.
    if (next !== field(req.body, 'confirm_password')) throw invalid('The two new passwords are not the same.', ['confirm_password']);
    await d.auth.changePassword(a.user, a.identity.sid, { current_password: current, new_password: next }, d.clientIp(req));
    seeOther(ctx, res, `${page}?done=password_changed`);
  });

  const enrollActions = { setup: ctx.prefix + ACCOUNT_FORMS.mfaSetup, enable: ctx.prefix + ACCOUNT_FORMS.mfaEnable };
  form(ACCOUNT_FORMS.mfaSetup, 'mfa', async (a, _req, res) => {
    const out = await d.mfa.setup(a.user);
    res.type('html').send(mfaSetupPage(ctx.pages, { rd: page, setup: { qrSvg: out.qr_svg, secret: out.secret }, actions: enrollActions, echoSecret: true }));
  });

  form(ACCOUNT_FORMS.mfaEnable, 'mfa', async (a, req, res) => {
    let out: { recovery_codes: string[] };
    try {
      out = await d.mfa.enable(a.user, { code: field(req.body, 'code') });
    } catch (e) {
      if (!is(e, Errors.invalid_input)) throw e;
      // A wrong code: the same QR code and key again, with the reason; but only to the form
      // that sends the key back (the page that was shown it), never to another session.
      const pending = await d.mfa.pendingSetup(a.user.id, field(req.body, 'secret'));
      d.respond.send(req, res, e, {
        html: () =>
          mfaSetupPage(ctx.pages, {
            rd: page,
            setup: { qrSvg: pending.qr_svg, secret: pending.secret },
            actions: enrollActions,
            echoSecret: true,
            error: 'That code is not valid. Check that the time on your phone is right, and enter the newest code.',
          }),
      });
      return;
    }
    res.type('html').send(recoveryCodesPage(ctx.pages, { rd: `${page}?done=mfa_enabled`, codes: out.recovery_codes, username: a.user.username }));
  });

  form(ACCOUNT_FORMS.mfaDisable, 'mfa', async (a, req, res) => {
    await d.mfa.disable(a.user, { password: field(req.body, 'password'), code: field(req.body, 'code') }, d.clientIp(req));
    seeOther(ctx, res, `${page}?done=mfa_disabled`);
  });

  form(ACCOUNT_FORMS.recoveryCodes, 'recovery', async (a, req, res) => {
    const code = field(req.body, 'code').trim();
    const password = field(req.body, 'password');
    if (!code === !password) {
      throw invalid(code ? 'Fill in one of the two: the code or your password.' : 'Fill in a code from your app or your password.', ['code', 'password']);
    }
    const out = await d.mfa.regenerateRecoveryCodes(a.user, code ? { code } : { password }, d.clientIp(req));
    res.type('html').send(recoveryCodesPage(ctx.pages, { rd: page, codes: out.recovery_codes, username: a.user.username }));
  });

  return r;
}
