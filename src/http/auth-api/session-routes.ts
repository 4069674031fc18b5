import express from 'express';
import { Errors, GatewayError, is } from '../../errors/index.js';
import { parseCookies } from '../cookies.js';
import { appendCookies, bodyParsers, csrfError, isForm, requireAuth, seeOther, tokenBody, wrap, type Authed, type RouterDeps } from './kit.js';

/**
 * Tokens and sessions: `POST /refresh` (body or refresh cookie), `POST /logout` (API or the
 * sign-out form), `GET /me`, `GET /sessions` and `DELETE /sessions/{id}`.
 */
export function sessionRoutes(d: RouterDeps): express.Router {
  const { ctx } = d;
  const { optionalBody } = bodyParsers(ctx);
  const r = express.Router();

  r.post(
    '/refresh',
    optionalBody,
    wrap(async (req, res) => {
      const fromBody = typeof req.body === 'object' && req.body !== null ? (req.body as Record<string, unknown>).refresh_token : undefined;
      if (fromBody !== undefined && typeof fromBody !== 'string') {
        throw new GatewayError(Errors.invalid_input, 'Invalid fields: refresh_token.', {
          extra: { errors: [{ field: 'refresh_token', message: fromBody === null ? 'required' : 'must be a string' }] },
        });
      }
      let token: unknown = fromBody;
      let viaCookie = false;
      if (token === undefined) {
        token = parseCookies(req.headers.cookie).get(ctx.cookies.names.refresh);
        viaCookie = token !== undefined;
        if (viaCookie && !ctx.fromOurPages(req.headers)) throw csrfError();
      }
      if (token === undefined)
        throw new GatewayError(Errors.invalid_input, 'Send {"refresh_token": "…"} or the refresh cookie.', {
          extra: { errors: [{ field: 'refresh_token', message: 'required' }] },
        });
      try {
        const out = await d.auth.refresh(token);
        if (viaCookie) appendCookies(res, ctx.cookies.session(out));
        res.json(tokenBody(out));
      } catch (e) {
        // A dead refresh cookie is cleared with the refusal.
        if (viaCookie && is(e, Errors.invalid_refresh_token)) appendCookies(res, ctx.cookies.clear());
        throw e;
      }
    }),
  );

  r.post(
    '/logout',
    optionalBody,
    wrap(async (req, res) => {
      const form = isForm(req);
      let a: Authed | undefined;
      try {
        a = await requireAuth(d, req, res);
      } catch (e) {
        // A browser that is already signed out just lands on the sign-in page.
        if (form && (is(e, Errors.unauthenticated) || is(e, Errors.invalid_token))) {
          appendCookies(res, ctx.cookies.clear());
          seeOther(ctx, res, ctx.signIn());
          return;
        }
        throw e;
      }
      await d.auth.revokeSession(a.identity.sid, 'logout');
      if (a.via === 'cookie') appendCookies(res, ctx.cookies.clear());
      if (form) seeOther(ctx, res, ctx.signIn());
      else res.status(204).end();
    }),
  );

  r.get(
    '/me',
    wrap(async (req, res) => {
      const { identity, user } = await requireAuth(d, req, res);
      res.json({ id: user.id, username: user.username, email: user.email, roles: user.roles, mfa_enabled: user.mfaEnabled, session_id: identity.sid });
    }),
  );

  r.get(
    '/sessions',
    wrap(async (req, res) => {
      const { identity, user } = await requireAuth(d, req, res);
      res.json({ sessions: await d.auth.listSessions(user.id, identity.sid) });
    }),
  );

  r.delete(
    '/sessions/:id',
    wrap(async (req, res) => {
      const { user } = await requireAuth(d, req, res);
      await d.auth.revokeOwnSession(user.id, String(req.params.id));
      res.status(204).end();
    }),
  );

  return r;
}
