import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { is, Errors } from '../errors/index.js';
import { generateSigningJwk, loadKeySet, loadOrCreateKeyFile, readKeyFile } from './keys.js';

describe('generateSigningJwk', () => {
  it('makes a private Ed25519 JWK whose kid is its RFC 7638 thumbprint', async () => {
    const jwk = await generateSigningJwk();
    expect(jwk.kty).toBe('OKP');
    expect(jwk.crv).toBe('Ed25519');
    expect(jwk.alg).toBe('EdDSA');
    expect(jwk.use).toBe('sig');
    expect(typeof jwk.d).toBe('string');
    expect(jwk.x).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(jwk.kid).toBe(await calculateJwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: jwk.x }));
    const other = await generateSigningJwk();
    expect(other.kid).not.toBe(jwk.kid);
  });
});

describe('loadKeySet', () => {
  it('keeps order (first is active) and publishes public parts only', async () => {
    const a = await generateSigningJwk();
    const b = await generateSigningJwk();
    const set = await loadKeySet({ keys: [a, b] });
    expect(set.active.kid).toBe(a.kid);
    expect(set.kids).toEqual([a.kid, b.kid]);
    const jwks = set.publicJwks();
    expect(jwks.keys).toEqual([
      { kty: 'OKP', crv: 'Ed25519', x: a.x, kid: a.kid, alg: 'EdDSA', use: 'sig' },
      { kty: 'OKP', crv: 'Ed25519', x: b.x, kid: b.kid, alg: 'EdDSA', use: 'sig' },
    ]);
    const text = JSON.stringify(jwks);
    expect(text).not.toContain('"d"');
    expect(text).not.toContain(a.d!);
    expect(text).not.toContain(b.d!);
  });

  it('returns a fresh copy each time (callers cannot alter the set)', async () => {
    const set = await loadKeySet({ keys: [await generateSigningJwk()] });
    const first = set.publicJwks();
    first.keys[0].x = 'tampered';
    expect(set.publicJwks().keys[0].x).not.toBe('tampered');
  });

  async function rejects(keys: unknown, pattern: RegExp): Promise<void> {
    const err = await loadKeySet(keys as { keys: JWK[] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(is(err, Errors.invalid_config)).toBe(true);
    expect((err as Error).message).toMatch(pattern);
  }

  it('rejects an empty set, a missing kid and duplicate kids', async () => {
    const a = await generateSigningJwk();
    await rejects({ keys: [] }, /empty/);
    await rejects({}, /JWKS object/);
    await rejects({ keys: [{ ...a, kid: undefined }] }, /key #1: missing "kid"/);
    await rejects({ keys: [a, { ...(await generateSigningJwk()), kid: a.kid }] }, /key #2 \(kid ".+"\): duplicate kid/);
  });

  it('rejects other key types, curves, algorithms and public-only keys', async () => {
    const a = await generateSigningJwk();
    await rejects({ keys: [{ kty: 'oct', k: 'c2VjcmV0', kid: 'h' }] }, /kty "oct" is not supported/);
    await rejects({ keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y', d: 'd', kid: 'e' }] }, /kty "EC" is not supported/);
    await rejects({ keys: [{ ...a, crv: 'Ed448' }] }, /crv "Ed448" is not supported/);
    await rejects({ keys: [{ ...a, alg: 'HS256' }] }, /alg "HS256"/);
    await rejects({ keys: [{ ...a, use: 'enc' }] }, /use "enc"/);
    await rejects({ keys: [{ ...a, d: undefined }] }, /missing "d"/);
  });

  it('rejects a key whose x does not belong to its d', async () => {
    const a = await generateSigningJwk();
    const b = await generateSigningJwk();
    await rejects({ keys: [{ ...a, x: b.x }] }, /not a valid Ed25519 key pair/);
  });
});

describe('key files', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-keys-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('embedded mode generates a 0600 key file with a warning, then reloads it identically', async () => {
    const path = join(dir, 'nested', 'data', 'signing-keys.json');
    const logs: string[] = [];
    const created = await loadOrCreateKeyFile(path, (m) => logs.push(m));
    expect(logs).toHaveLength(1);
    expect(logs[0]).toContain('generated a new Ed25519 signing key');
    expect(logs[0]).toContain(created.active.kid);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'nested', 'data'))).mode & 0o077).toBe(0);

    const onDisk = JSON.parse(await readFile(path, 'utf8')) as { keys: JWK[] };
    expect(onDisk.keys).toHaveLength(1);
    expect(onDisk.keys[0].kid).toBe(created.active.kid);
    expect(typeof onDisk.keys[0].d).toBe('string');

    const logs2: string[] = [];
    const reloaded = await loadOrCreateKeyFile(path, (m) => logs2.push(m));
    expect(logs2).toEqual([]);
    expect(reloaded.publicJwks()).toEqual(created.publicJwks());
    expect((await readKeyFile(path)).publicJwks()).toEqual(created.publicJwks());
  });

  it('warns when an existing key file is readable by others', async () => {
    const path = join(dir, 'keys.json');
    await writeFile(path, JSON.stringify({ keys: [await generateSigningJwk()] }), { mode: 0o644 });
    const logs: string[] = [];
    await loadOrCreateKeyFile(path, (m) => logs.push(m));
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatch(/readable by other users \(mode 644\)/);
  });

  it('readKeyFile fails clearly on a missing file, bad JSON and a bad key set', async () => {
    const missing = await readKeyFile(join(dir, 'nope.json')).catch((e: unknown) => e);
    expect(is(missing, Errors.missing_keys)).toBe(true);
    expect((missing as Error).message).toMatch(/nope\.json not found/);

    const bad = join(dir, 'bad.json');
    await writeFile(bad, '{ not json');
    const badJson = await readKeyFile(bad).catch((e: unknown) => e);
    expect(is(badJson, Errors.invalid_config)).toBe(true);
    expect((badJson as Error).message).toMatch(/bad\.json is not valid JSON/);

    const pub = join(dir, 'public.json');
    const set = await loadKeySet({ keys: [await generateSigningJwk()] });
    await writeFile(pub, JSON.stringify(set.publicJwks()));
    const publicOnly = await readKeyFile(pub).catch((e: unknown) => e);
    expect(is(publicOnly, Errors.invalid_config)).toBe(true);
    expect((publicOnly as Error).message).toMatch(/public\.json, key #1 .*missing "d"/);
  });

  it('loadOrCreateKeyFile does not overwrite an invalid existing file', async () => {
    const path = join(dir, 'keys.json');
    await writeFile(path, '{"keys": []}', { mode: 0o600 });
    await expect(loadOrCreateKeyFile(path, () => {})).rejects.toThrow(/empty/);
    expect(await readFile(path, 'utf8')).toBe('{"keys": []}');
  });
});
