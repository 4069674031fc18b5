import express, { type RequestHandler } from 'express';
import { Errors, is, type ErrorDef } from '../../errors/index.js';
import type { LoginResult } from '../../auth/index.js';
import { parseCookies } from '../cookies.js';
import { loginPage, mfaPage, mfaSetupPage, recoveryCodesPage } from '../pages.js';
import { appendCookies, bodyParsers, clientOf, isForm, requireAuth, seeOther, tokenBody, wrap, type RouterDeps } from './kit.js';

const isMfaStep = (r: LoginResult): r is Extract<LoginResult, { mfa_required: true }> => 'mfa_required' in r;

/** Errors the sign-in form explains on itself; the rest get the error page (or problem+json). */
const SHOWN_ON_LOGIN_FORM: readonly ErrorDef[] = [Errors.invalid_input, Errors.invalid_credentials, Errors.account_locked, Errors.rate_limited];
/** Errors the code form explains on itself (`invalid_token` sends the browser back to the password). */
const SHOWN_ON_CODE_FORM: readonly ErrorDef[] = [Errors.invalid_input, Errors.invalid_mfa_code, Errors.account_locked, Errors.rate_limited];
const oneOf = (e: unknown, defs: readonly ErrorDef[]) => defs.some((def) => is(e, def));

/**
 * Sign-in and two-factor authentication: `POST /login` (JSON or the sign-in form, behind
 * `loginLimit`),
 * `POST /2fa/verify` (JSON or the code form), and enrollment: the `GET /2fa/setup` page,
 * `POST /2fa/setup`, `/2fa/enable` and `/2fa/disable`; `POST /2fa/recovery-codes` (a new set).
 */
export function signInRoutes(d: RouterDeps, loginLimit: RequestHandler): express.Router {
  const { ctx } = d;
  const { body, optionalBody } = bodyParsers(ctx);
  const r = express.Router();

  r.post(
    '/login',
    loginLimit,
    body,
    wrap(async (req, res) => {
      const client = clientOf(d, req);
      if (!isForm(req)) {
        const out = await d.auth.login(req.body, client);
        res.status(200).json(isMfaStep(out) ? out : tokenBody(out));
        return;
      }
      const rd = ctx.returnTo(req.body?.rd);
      const username = typeof req.body?.username === 'string' ? req.body.username : '';
      try {
        const out = await d.auth.login(req.body, client);
        if (isMfaStep(out)) {
          // The MFA token waits in a short-lived cookie scoped to the auth prefix.
          appendCookies(res, [ctx.cookies.mfaStep(out.mfa_token, out.expires_in)]);
          seeOther(ctx, res, `${ctx.prefix}/2fa?rd=${encodeURIComponent(rd)}`);
          return;
        }
        appendCookies(res, ctx.cookies.session(out));
        seeOther(ctx, res, rd);
      } catch (e) {
        if (!oneOf(e, SHOWN_ON_LOGIN_FORM)) throw e;
        d.respond.send(req, res, e, {
          html: (err) =>
            loginPage(ctx.pages, {
              rd,
              error: is(err, Errors.invalid_input) ? 'Enter a valid username and password.' : err.message,
              username: username.slice(0, 64),
            }),
        });
      }
    }),
  );

  r.post(
    '/2fa/verify',
    body,
    wrap(async (req, res) => {
      const client = clientOf(d, req);
      if (!isForm(req)) {
        const user = await d.mfa.verifyLogin(req.body, client.ip);
        res.json(tokenBody(await d.auth.completeLogin(user, ['pwd', 'otp'], client)));
        return;
      }
      const rd = ctx.returnTo(req.body?.rd);
      const mfaToken = parseCookies(req.headers.cookie).get(ctx.cookies.mfa);
      try {
        const user = await d.mfa.verifyLogin({ mfa_token: mfaToken ?? '', code: req.body?.code }, client.ip);
        const out = await d.auth.completeLogin(user, ['pwd', 'otp'], client);
        appendCookies(res, [...ctx.cookies.session(out), ctx.cookies.clearMfaStep()]);
        seeOther(ctx, res, rd);
      } catch (e) {
        if (is(e, Errors.invalid_token)) {
          // The MFA step is over (expired, used up): start again from the password.
          appendCookies(res, [ctx.cookies.clearMfaStep()]);
          seeOther(ctx, res, ctx.signIn(rd));
          return;
        }
        if (!oneOf(e, SHOWN_ON_CODE_FORM)) throw e;
        d.respond.send(req, res, e, {
          html: (err) => mfaPage(ctx.pages, { rd, error: is(err, Errors.account_locked) ? err.message : 'That code is not valid.' }),
        });
      }
    }),
  );

  r.get(
    '/2fa/setup',
    wrap(async (req, res) => {
      const rd = ctx.returnTo(req.query.rd);
      const a = await d.authenticate(req);
      appendCookies(res, a.setCookies);
      if (!a.identity) {
        seeOther(ctx, res, ctx.signIn(`${ctx.prefix}/2fa/setup?rd=${encodeURIComponent(rd)}`));
        return;
      }
      const user = await d.auth.currentUser(a.identity);
      res.type('html').send(mfaSetupPage(ctx.pages, { rd, enabled: user.mfaEnabled }));
    }),
  );

  r.post(
    '/2fa/setup',
    optionalBody,
    wrap(async (req, res) => {
      const { user } = await requireAuth(d, req, res);
      const out = await d.mfa.setup(user);
      if (!isForm(req)) {
        res.json(out);
        return;
      }
      const rd = ctx.returnTo(req.body?.rd);
      res.type('html').send(mfaSetupPage(ctx.pages, { rd, setup: { qrSvg: out.qr_svg, secret: out.secret } }));
    }),
  );

  r.post(
    '/2fa/enable',
    body,
    wrap(async (req, res) => {
      const { user } = await requireAuth(d, req, res);
      if (!isForm(req)) {
        res.json(await d.mfa.enable(user, req.body));
        return;
      }
      const rd = ctx.returnTo(req.body?.rd);
      const out = await d.mfa.enable(user, { code: req.body?.code });
      // The current session was signed in without a code; continuing through the sign-in page
      // gets a session whose token carries amr "otp".
      res.type('html').send(recoveryCodesPage(ctx.pages, { rd: ctx.link(ctx.signIn(rd)), codes: out.recovery_codes, username: user.username }));
    }),
  );

  r.post(
    '/2fa/disable',
    body,
    wrap(async (req, res) => {
      const { user } = await requireAuth(d, req, res);
      await d.mfa.disable(user, req.body, d.clientIp(req));
      res.status(204).end();
    }),
  );

  r.post(
    '/2fa/recovery-codes',
    body,
    wrap(async (req, res) => {
      const { user } = await requireAuth(d, req, res);
      const out = await d.mfa.regenerateRecoveryCodes(user, req.body, d.clientIp(req));
      res.setHeader('cache-control', 'no-store');
      res.json(out);
    }),
  );

  return r;
}
