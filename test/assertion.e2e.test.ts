import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { addUser, login, startHarness, type Harness } from './support/helpers.js';

// The harness's echo upstream is named "echo"; this one asks for signed assertions.
const ROUTES = `
routes:
  - name: asserted
    match: { path: /asserted/** }
    upstream: echo
    access: authenticated
  - name: plain-public
    match: { path: /open/** }
    upstream: echo
    access: public
`;

describe('upstream assertion (X-Auth-Assertion)', () => {
  let h: Harness;
  let token: string;
  beforeAll(async () => {
    h = await startHarness({ routes: ROUTES, upstreamExtra: '    assertion: true' });
    await addUser(h, 'ada', ['analyst', 'ops']);
    token = await login(h, 'ada');
  });
  afterAll(() => h.close());

  it('is signed by the gateway, aud = upstream name, 60 s lifetime, verifiable with the JWKS', async () => {
    const echo = await (await fetch(`${h.url}/asserted/x`, { headers: { authorization: `Bearer ${token}`, 'x-auth-assertion': 'forged' } })).json();
    const assertion = echo.headers['x-auth-assertion'];
    expect(assertion).toBeTypeOf('string');
    expect(assertion).not.toBe('forged');
    expect(decodeProtectedHeader(assertion)).toMatchObject({ alg: 'EdDSA', typ: 'portcullis-assertion+jwt' });
    const jwks = createLocalJWKSet(await (await fetch(`${h.url}/.well-known/jwks.json`)).json());
    const { payload } = await jwtVerify(assertion, jwks, {
      audience: 'echo',
      issuer: h.app.config.issuer,
      typ: 'portcullis-assertion+jwt',
      algorithms: ['EdDSA'],
    });
    expect(payload).toMatchObject({ username: 'ada', roles: ['analyst', 'ops'], email: 'ada@example.com' });
    expect(payload.exp! - payload.iat!).toBe(60);
    await expect(jwtVerify(assertion, jwks, { audience: 'other-upstream', issuer: h.app.config.issuer })).rejects.toThrow();
  });

  it('is not accepted as an access token', async () => {
    const echo = await (await fetch(`${h.url}/asserted/x`, { headers: { authorization: `Bearer ${token}` } })).json();
    const r = await fetch(`${h.url}/asserted/y`, { headers: { authorization: `Bearer ${echo.headers['x-auth-assertion']}` } });
    expect(r.status).toBe(401);
  });

  it('is absent for anonymous requests, and a client-sent one is stripped', async () => {
    const echo = await (await fetch(`${h.url}/open/x`, { headers: { 'x-auth-assertion': 'forged' } })).json();
    expect(echo.headers['x-auth-assertion']).toBeUndefined();
  });
});
