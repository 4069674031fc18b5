/**
 * The forward-auth half of "nginx auth_request → Node JWT verifier": a small keep-alive HTTP
 * server that nginx asks about every request. It verifies the bearer token with jose against
 * the gateway's public JWKS (EdDSA, typ at+jwt, iss, aud, exp — what a stateless verifier can
 * check) and answers 200 with X-Auth-User / X-Auth-Roles, or 401. No caching: one signature
 * verification per request, as forward-auth verifiers do.
 *
 *   node --import tsx bench/verifier.ts --listen 127.0.0.1:PORT --jwks URL --issuer ISS [--audience portcullis]
 */
import { createServer } from 'node:http';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';

const arg = (name: string, def?: string) => {
  const i = process.argv.indexOf(`--${name}`);
  const v = i === -1 ? def : process.argv[i + 1];
  if (v === undefined) throw new Error(`missing --${name}`);
  return v;
};
const listen = arg('listen');
const issuer = arg('issuer');
const audience = arg('audience', 'portcullis');
const jwks = createLocalJWKSet((await (await fetch(arg('jwks'))).json()) as JSONWebKeySet);

const server = createServer((req, res) => {
  const m = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/.exec(req.headers.authorization ?? '');
  if (!m) {
    res.writeHead(401, { 'content-length': 0 }).end();
    return;
  }
  jwtVerify(m[1], jwks, { algorithms: ['EdDSA'], typ: 'at+jwt', issuer, audience }).then(
    ({ payload }) => {
      const roles = Array.isArray(payload.roles) ? payload.roles.join(',') : '';
      res
        .writeHead(200, {
          'x-auth-user': String(payload.username ?? payload.sub),
          'x-auth-user-id': String(payload.sub),
          'x-auth-roles': roles,
          'content-length': 0,
        })
        .end();
    },
    () => res.writeHead(401, { 'content-length': 0 }).end(),
  );
});
// Longer than nginx's upstream keepalive_timeout, so nginx never reuses a connection we closed.
server.keepAliveTimeout = 65_000;
const at = listen.lastIndexOf(':');
server.listen(Number(listen.slice(at + 1)), listen.slice(0, at), () => process.stdout.write(`verifier listening on ${listen}\n`));
process.once('SIGTERM', () => process.exit(0));
