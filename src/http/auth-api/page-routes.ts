import express from 'express';
import { parseCookies } from '../cookies.js';
import { loginPage, logoutPage, mfaPage, STYLESHEET } from '../pages.js';
import { appendCookies, seeOther, wrap, type RouterDeps } from './kit.js';

/**
 * The pages a browser navigates to: `GET /login`, `GET /2fa` (the code prompt of a two-step
 * sign-in), `GET /logout` (the sign-out confirmation) and the one stylesheet. The forms post to
 * the API routes; the enrollment page sits with 2FA (sign-in-routes.ts).
 */
export function pageRoutes(d: RouterDeps): express.Router {
  const { ctx } = d;
  const r = express.Router();

  r.get('/static/portcullis.css', (_req, res) => {
    res.setHeader('cache-control', 'public, max-age=3600');
    res.type('text/css').send(STYLESHEET);
  });

  r.get('/login', (req, res) => {
    res.type('html').send(loginPage(ctx.pages, { rd: ctx.returnTo(req.query.rd) }));
  });

  r.get('/2fa', (req, res) => {
    const rd = ctx.returnTo(req.query.rd);
    if (!parseCookies(req.headers.cookie).get(ctx.cookies.mfa)) {
      seeOther(ctx, res, ctx.signIn(rd));
      return;
    }
    res.type('html').send(mfaPage(ctx.pages, { rd }));
  });

  r.get(
    '/logout',
    wrap(async (req, res) => {
      const a = await d.authenticate(req);
      appendCookies(res, a.setCookies);
      res.type('html').send(logoutPage(ctx.pages, { signedInAs: a.identity?.username ?? null }));
    }),
  );

  return r;
}
