import express from 'express';
import { bodyParsers, requireAuth, wrap, type RouterDeps } from './kit.js';

/** The password: `POST /password` (`{current_password, new_password}`; every other session revoked). */
export function passwordRoutes(d: RouterDeps): express.Router {
  const { body } = bodyParsers(d.ctx);
  const r = express.Router();

  r.post(
    '/password',
    body,
    wrap(async (req, res) => {
      const { identity, user } = await requireAuth(d, req, res);
      await d.auth.changePassword(user, identity.sid, req.body, d.clientIp(req));
      res.status(204).end();
    }),
  );

  return r;
}
