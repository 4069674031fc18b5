/**
 * End-to-end: forged and misused access tokens (SPEC §5) sent through the real gateway.
 * Every forgery starts from a genuine login token, so all its other claims are valid; each
 * must be answered 401 invalid_token by the gateway itself, without reaching the upstream.
 * Tests are named after the attack they prevent.
 */
import { createHmac, createPublicKey, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { addUser, login, startHarness, type Harness } from './support/helpers.js';

const LIMITS = `
auth:
  login_rate_limit: { requests: 100000, per: 1m }
  lockout: { max_failures: 100000, window: 15m, duration: 15m }
`;
const CHALLENGE = 'Bearer realm="portcullis", error="invalid_token"';

let h: Harness;
/** A genuine token of mallory (no roles) and of root (admin, password only). */
let mallory: string;
let root: string;
let ourKid: string;
let ourJwk: JWK;
let attacker: { privateKey: CryptoKey; publicJwk: JWK };

const b64u = (x: string | Buffer) => Buffer.from(x).toString('base64url');
const decodePart = (part: string) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;

function split(token: string) {
  const [h64, p64, sig] = token.split('.');
  return { h64, p64, sig, header: decodePart(h64), payload: decodePart(p64) as JWTPayload };
}

/** The genuine claims of a token, with a fresh jti (so a forgery is never a cached string). */
function claimsOf(token: string, over: Record<string, unknown> = {}): JWTPayload {
  const out: Record<string, unknown> = { ...split(token).payload, jti: randomUUID(), ...over };
  for (const [k, v] of Object.entries(over)) if (v === undefined) delete out[k];
  return out as JWTPayload;
}

/** Signs header + payload with the given Ed25519 key (by default the gateway's own active key). */
function signEd(
  header: Record<string, unknown>,
  payload: JWTPayload,
  key: CryptoKey = h.app.keySet.active.privateKey,
  crit?: Record<string, boolean>,
): Promise<string> {
  return new SignJWT(payload).setProtectedHeader(header as { alg: string }).sign(key, crit ? { crit } : undefined);
}

/** Hand-built HS256 JWS with the given secret (no library second-guessing the key). */
function signHs256(header: Record<string, unknown>, payload: JWTPayload, secret: Buffer | string): string {
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

async function echoRequests(): Promise<number> {
  const res = await fetch(`${h.echoUrl}/__echo/stats`);
  return ((await res.json()) as { requests: number }).requests;
}

/**
 * Starts counting the requests the echo upstream receives from now on, not counting our own
 * stats calls (whether or not the echo app counts those itself).
 */
async function upstreamCounter(): Promise<() => Promise<number>> {
  const a = await echoRequests();
  const b = await echoRequests();
  const self = b - a; // 1 when a stats call counts itself, else 0
  return async () => (await echoRequests()) - b - self;
}

/** A problem+json answer with this status and code. */
async function expectProblem(res: Response, status: number, code: string): Promise<void> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  expect(res.headers.get('content-type')).toBe('application/problem+json');
  const body = JSON.parse(text) as Record<string, unknown>;
  expect(body.status).toBe(status);
  expect(body.code).toBe(code);
}

/** The auth API refuses the token too: as a bearer on /me (401 invalid_token), as a refresh token (401 invalid_refresh_token). */
async function expectAuthApiRefuses(token: string): Promise<void> {
  const me = await fetch(`${h.url}/api/auth/me`, { headers: { authorization: `Bearer ${token}` } });
  await expectProblem(me, 401, 'invalid_token');
  const refresh = await fetch(`${h.url}/api/auth/refresh`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ refresh_token: token }),
  });
  await expectProblem(refresh, 401, 'invalid_refresh_token');
}

/** Sends the token; expects the gateway's own 401 invalid_token and no upstream request. */
async function expectRejected(token: string, path = '/app/x'): Promise<void> {
  const forwarded = await upstreamCounter();
  const res = await fetch(`${h.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  const text = await res.text();
  expect(res.status, text).toBe(401);
  expect(res.headers.get('www-authenticate')).toBe(CHALLENGE);
  expect(res.headers.get('content-type')).toBe('application/problem+json');
  const body = JSON.parse(text) as Record<string, unknown>;
  expect(body.code).toBe('invalid_token');
  expect(body.status).toBe(401);
  // Not the echo app's answer…
  expect(body).not.toHaveProperty('identity');
  expect(body).not.toHaveProperty('headers');
  // …and the echo app received nothing.
  expect(await forwarded()).toBe(0);
}

async function get(token: string, path = '/app/x') {
  const res = await fetch(`${h.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  return { res, body: (await res.json()) as Record<string, any> };
}

beforeAll(async () => {
  h = await startHarness({ extraYaml: LIMITS });
  await addUser(h, 'mallory', []);
  await addUser(h, 'root', ['admin']);
  mallory = await login(h, 'mallory');
  root = await login(h, 'root');
  ourKid = h.app.keySet.active.kid;
  ourJwk = { ...h.app.keySet.active.publicJwk };
  const kp = await generateKeyPair('Ed25519', { extractable: true });
  attacker = { privateKey: kp.privateKey, publicJwk: await exportJWK(kp.publicKey) };
});

afterAll(async () => {
  await h?.close();
});

describe('control cases (the suite would fail if everything were 401)', () => {
  it('a genuine token reaches the upstream with its identity', async () => {
    const forwarded = await upstreamCounter();
    const { res, body } = await get(mallory);
    expect(res.status).toBe(200);
    expect(body.identity.user).toBe('mallory');
    expect(body.identity.roles).toEqual([]);
    expect(await forwarded()).toBe(1);
  });

  it('a token re-signed by the gateway key with the genuine header and claims is accepted (the forging helpers work)', async () => {
    const { header } = split(mallory);
    expect(header).toEqual({ alg: 'EdDSA', typ: 'at+jwt', kid: ourKid });
    const { res, body } = await get(await signEd(header, claimsOf(mallory)));
    expect(res.status).toBe(200);
    expect(body.identity.user).toBe('mallory');
  });

  it('a user without the admin role gets 403 forbidden on /admin/x, not 401', async () => {
    const { res, body } = await get(mallory, '/admin/x');
    expect(res.status).toBe(403);
    expect(body.code).toBe('forbidden');
    expect(res.headers.get('www-authenticate')).toBeNull();
    expect((await get(root, '/admin/x')).res.status).toBe(200);
  });

  it('an admin token without otp in amr gets 403 mfa_required on /secure/x', async () => {
    const { res, body } = await get(root, '/secure/x');
    expect(res.status).toBe(403);
    expect(body.code).toBe('mfa_required');
  });
});

describe('algorithm confusion', () => {
  it('alg:none (unsigned token) is rejected', async () => {
    const header = { alg: 'none', typ: 'at+jwt', kid: ourKid };
    await expectRejected(`${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(claimsOf(mallory)))}.`);
  });

  it('alg:none with a case variant ("None") is rejected', async () => {
    const header = { alg: 'None', typ: 'at+jwt', kid: ourKid };
    await expectRejected(`${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(claimsOf(mallory)))}.`);
  });

  it('EdDSA header with the signature stripped is rejected', async () => {
    const { h64, p64 } = split(mallory);
    await expectRejected(`${h64}.${p64}.`);
  });

  it('HS256 signed with the public key bytes (JWK x) as the HMAC secret is rejected', async () => {
    const header = { alg: 'HS256', typ: 'at+jwt', kid: ourKid };
    await expectRejected(signHs256(header, claimsOf(mallory), Buffer.from(ourJwk.x!, 'base64url')));
    // …and with the base64url text of x, for implementations that use the string.
    await expectRejected(signHs256(header, claimsOf(mallory), ourJwk.x!));
  });

  it('HS256 signed with the public key PEM as the HMAC secret is rejected', async () => {
    const pem = createPublicKey({ key: ourJwk as import('node:crypto').JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string;
    expect(pem).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    await expectRejected(signHs256({ alg: 'HS256', typ: 'at+jwt', kid: ourKid }, claimsOf(mallory), pem));
    await expectRejected(signHs256({ alg: 'HS256', typ: 'at+jwt', kid: ourKid }, claimsOf(mallory), Buffer.from(pem)));
  });
});

describe('key substitution', () => {
  it('unknown kid (a fresh Ed25519 key under its own kid) is rejected', async () => {
    await expectRejected(await signEd({ alg: 'EdDSA', typ: 'at+jwt', kid: 'attacker-key-1' }, claimsOf(mallory), attacker.privateKey));
  });

  it('a foreign Ed25519 key signing under our known kid is rejected', async () => {
    await expectRejected(await signEd({ alg: 'EdDSA', typ: 'at+jwt', kid: ourKid }, claimsOf(mallory), attacker.privateKey));
  });

  it('a token with no kid, even when signed by our own key, is rejected', async () => {
    await expectRejected(await signEd({ alg: 'EdDSA', typ: 'at+jwt' }, claimsOf(mallory)));
  });

  it('an embedded jwk header (attacker public key carried in the token) is not trusted', async () => {
    await expectRejected(await signEd({ alg: 'EdDSA', typ: 'at+jwt', jwk: attacker.publicJwk }, claimsOf(mallory), attacker.privateKey));
    await expectRejected(await signEd({ alg: 'EdDSA', typ: 'at+jwt', kid: ourKid, jwk: attacker.publicJwk }, claimsOf(mallory), attacker.privateKey));
  });

  it('a jku header pointing at an attacker JWKS is never fetched', async () => {
    let hits = 0;
    const evil = http.createServer((_req, res) => {
      hits++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [{ ...attacker.publicJwk, kid: 'evil', alg: 'EdDSA' }] }));
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
    try {
      const jku = `http://127.0.0.1:${(evil.address() as AddressInfo).port}/jwks.json`;
      await expectRejected(await signEd({ alg: 'EdDSA', typ: 'at+jwt', kid: 'evil', jku }, claimsOf(mallory), attacker.privateKey));
      await expectRejected(await signEd({ alg: 'EdDSA', typ: 'at+jwt', kid: ourKid, jku }, claimsOf(mallory), attacker.privateKey));
      expect(hits).toBe(0);
    } finally {
      evil.closeAllConnections();
      await new Promise<void>((r) => evil.close(() => r()));
    }
  });
});

describe('token kind confusion (typ)', () => {
  it('typ "JWT" signed by our key is rejected', async () => {
    await expectRejected(await signEd({ alg: 'EdDSA', typ: 'JWT', kid: ourKid }, claimsOf(mallory)));
  });

  it('a missing typ, signed by our key, is rejected', async () => {
    await expectRejected(await signEd({ alg: 'EdDSA', kid: ourKid }, claimsOf(mallory)));
  });

  it('a genuine upstream assertion (portcullis-assertion+jwt) is not accepted as an access token (nor by the auth API, nor as a refresh token)', async () => {
    const sub = split(mallory).payload.sub!;
    // Addressed to the access-token audience, so typ is what has to stop it, and as an upstream
    // would actually receive it.
    for (const upstream of [h.app.config.auth.audience, 'echo']) {
      const assertion = await h.app.tokens.signAssertion({ sub, username: 'mallory', email: 'mallory@example.com', roles: ['admin'], upstream });
      await expectRejected(assertion);
      await expectAuthApiRefuses(assertion);
    }
    // The full access-token claims under the assertion typ (only typ differs).
    await expectRejected(await signEd({ alg: 'EdDSA', typ: 'portcullis-assertion+jwt', kid: ourKid }, claimsOf(mallory)));
  });

  it('refresh and MFA token types are not accepted as access tokens', async () => {
    await expectRejected(await signEd({ alg: 'EdDSA', typ: 'portcullis-refresh+jwt', kid: ourKid }, claimsOf(mallory)));
    await expectRejected(await signEd({ alg: 'EdDSA', typ: 'portcullis-mfa+jwt', kid: ourKid }, claimsOf(mallory)));
  });
});

describe('claim checks', () => {
  it('wrong iss is rejected (and a missing iss)', async () => {
    const header = { alg: 'EdDSA', typ: 'at+jwt', kid: ourKid };
    await expectRejected(await signEd(header, claimsOf(mallory, { iss: 'https://evil.example' })));
    await expectRejected(await signEd(header, claimsOf(mallory, { iss: undefined })));
  });

  it('wrong aud is rejected (another audience, an array that includes ours, none)', async () => {
    const header = { alg: 'EdDSA', typ: 'at+jwt', kid: ourKid };
    await expectRejected(await signEd(header, claimsOf(mallory, { aud: 'crm' })));
    await expectRejected(await signEd(header, claimsOf(mallory, { aud: ['portcullis', 'crm'] })));
    await expectRejected(await signEd(header, claimsOf(mallory, { aud: undefined })));
  });

  it('an expired token signed by our key is rejected', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectRejected(await signEd({ alg: 'EdDSA', typ: 'at+jwt', kid: ourKid }, claimsOf(mallory, { iat: now - 1000, exp: now - 100 })));
  });

  it('a token without exp is rejected (no eternal tokens)', async () => {
    await expectRejected(await signEd({ alg: 'EdDSA', typ: 'at+jwt', kid: ourKid }, claimsOf(mallory, { exp: undefined })));
  });

  it('a token whose nbf is in the future is rejected', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectRejected(await signEd({ alg: 'EdDSA', typ: 'at+jwt', kid: ourKid }, claimsOf(mallory, { nbf: now + 600 })));
  });

  it('a token without a session id (sid) is rejected', async () => {
    await expectRejected(await signEd({ alg: 'EdDSA', typ: 'at+jwt', kid: ourKid }, claimsOf(mallory, { sid: undefined })));
  });

  it('a crit header naming an unknown extension is rejected', async () => {
    await expectRejected(
      await signEd({ alg: 'EdDSA', typ: 'at+jwt', kid: ourKid, crit: ['x-portcullis-unknown'], 'x-portcullis-unknown': true }, claimsOf(mallory), undefined, {
        'x-portcullis-unknown': true,
      }),
    );
  });
});

describe('tampering', () => {
  it('privilege escalation: roles raised to admin with the original signature kept is 401 on /admin/x (not 403, not 200)', async () => {
    const { h64, payload, sig } = split(mallory);
    const forged = `${h64}.${b64u(JSON.stringify({ ...payload, roles: ['admin'] }))}.${sig}`;
    await expectRejected(forged, '/admin/x');
    await expectRejected(forged, '/app/x');
  });

  it('MFA bypass: otp added to amr with the original signature kept is 401 on /secure/x', async () => {
    const { h64, payload, sig } = split(root);
    await expectRejected(`${h64}.${b64u(JSON.stringify({ ...payload, amr: ['pwd', 'otp'] }))}.${sig}`, '/secure/x');
  });

  it('impersonation: sub and username switched with the original signature kept is rejected', async () => {
    const { h64, payload, sig } = split(mallory);
    const r = split(root).payload;
    await expectRejected(`${h64}.${b64u(JSON.stringify({ ...payload, sub: r.sub, username: 'root' }))}.${sig}`);
  });

  it("signature transplant: one token's signature on another token's claims is rejected", async () => {
    const a = split(mallory);
    const b = split(root);
    await expectRejected(`${a.h64}.${b.p64}.${a.sig}`, '/admin/x');
  });

  it('a header swapped to alg none with the original signature kept is rejected', async () => {
    const { p64, sig } = split(mallory);
    await expectRejected(`${b64u(JSON.stringify({ alg: 'none', typ: 'at+jwt', kid: ourKid }))}.${p64}.${sig}`);
  });

  it('a token with a trailing byte on the signature is rejected', async () => {
    await expectRejected(`${mallory}A`);
  });
});

describe('expiry with a moving clock (verified-token cache)', () => {
  it('an accepted token is rejected once the clock passes its exp, even though it was cached', async () => {
    let offsetMs = 0;
    const timed = await startHarness({ extraYaml: LIMITS, now: () => new Date(Date.now() + offsetMs) });
    try {
      await addUser(timed, 'tick', []);
      const token = await login(timed, 'tick');
      const go = () => fetch(`${timed.url}/app/x`, { headers: { authorization: `Bearer ${token}` } });
      const first = await go();
      expect(first.status).toBe(200);
      await first.arrayBuffer();
      offsetMs = 14 * 60_000; // still inside the 15 minutes
      const second = await go();
      expect(second.status).toBe(200);
      await second.arrayBuffer();
      offsetMs = 15 * 60_000 + 5_000;
      const late = await go();
      expect(late.status).toBe(401);
      expect(late.headers.get('www-authenticate')).toBe(CHALLENGE);
      expect(((await late.json()) as { code: string }).code).toBe('invalid_token');
    } finally {
      await timed.close();
    }
  });
});
