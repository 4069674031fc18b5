/**
 * Unit tests of the at-rest encryption of TOTP secrets (SPEC §7, §5 keys): AES-256-GCM, the key
 * id beside each ciphertext, rotation through previous keys, binding to purpose and context,
 * and where the key comes from (environment, generated file in embedded mode, refusal in
 * production).
 */
import { createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { GatewayError } from '../errors/index.js';
import { SecretBox, loadSecretBox } from './secret-box.js';

const PURPOSE = 'totp-secret';
const SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';

const rawKey = () => randomBytes(32);
const b64 = (k: Buffer) => k.toString('base64');
/** The documented key id: the first 8 bytes of the key's SHA-256, hex. */
const kidOf = (k: Buffer) => createHash('sha256').update(k).digest('hex').slice(0, 16);

/** Replaces one base64url character so the decoded bytes differ. */
function flip(part: string, at = 0): string {
  const c = part[at];
  return part.slice(0, at) + (c === 'A' ? 'B' : 'A') + part.slice(at + 1);
}

function expectMissingKeys(fn: () => unknown, pattern: RegExp) {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(GatewayError);
  expect((err as GatewayError).code).toBe('missing_keys');
  expect((err as GatewayError).message).toMatch(pattern);
}

describe('SecretBox', () => {
  it('encrypts to v1.<kid>.<iv>.<ciphertext>.<tag> with a fresh 96-bit IV and no plaintext', () => {
    const k = rawKey();
    const box = new SecretBox(b64(k));
    expect(box.keyId).toBe(kidOf(k));
    const a = box.encrypt(SECRET, PURPOSE, 'user-1');
    const b = box.encrypt(SECRET, PURPOSE, 'user-1');
    expect(a).not.toBe(b);
    for (const v of [a, b]) {
      expect(v).toMatch(/^v1\.[0-9a-f]{16}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
      const [ver, kid, iv, ct, tag] = v.split('.');
      expect(ver).toBe('v1');
      expect(kid).toBe(kidOf(k));
      expect(Buffer.from(iv, 'base64url')).toHaveLength(12);
      expect(Buffer.from(tag, 'base64url')).toHaveLength(16);
      expect(Buffer.from(ct, 'base64url')).toHaveLength(SECRET.length);
      expect(v).not.toContain(SECRET);
      expect(v).not.toContain(Buffer.from(SECRET).toString('base64url'));
    }
    expect(a.split('.')[2]).not.toBe(b.split('.')[2]);
  });

  it('is real AES-256-GCM under an HKDF-SHA256 per-purpose key with the context as AAD', () => {
    const k = rawKey();
    const v = new SecretBox(b64(k)).encrypt(SECRET, PURPOSE, 'user-1');
    const [, , iv, ct, tag] = v.split('.');
    const key = Buffer.from(hkdfSync('sha256', k, Buffer.alloc(0), `portcullis:${PURPOSE}`, 32));
    const d = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'));
    d.setAAD(Buffer.from('user-1'));
    d.setAuthTag(Buffer.from(tag, 'base64url'));
    expect(Buffer.concat([d.update(Buffer.from(ct, 'base64url')), d.final()]).toString('utf8')).toBe(SECRET);
  });

  it('round-trips, and the value made by the active key is not stale', () => {
    const box = new SecretBox(b64(rawKey()));
    const v = box.encrypt(SECRET, PURPOSE, 'user-1');
    expect(box.decrypt(v, PURPOSE, 'user-1')).toEqual({ plaintext: SECRET, stale: false });
    expect(box.decrypt(box.encrypt('', PURPOSE, 'u'), PURPOSE, 'u')).toEqual({ plaintext: '', stale: false });
    const unicode = 'sécret ✓ 秘密';
    expect(box.decrypt(box.encrypt(unicode, PURPOSE, 'u'), PURPOSE, 'u').plaintext).toBe(unicode);
  });

  it('binds a ciphertext to its row (context) and purpose: moved or re-purposed values do not decrypt', () => {
    const box = new SecretBox(b64(rawKey()));
    const v = box.encrypt(SECRET, PURPOSE, 'user-1');
    expect(() => box.decrypt(v, PURPOSE, 'user-2')).toThrow();
    expect(() => box.decrypt(v, 'other-purpose', 'user-1')).toThrow();
  });

  it('refuses tampered IVs, ciphertexts and tags, truncated values and other versions', () => {
    const box = new SecretBox(b64(rawKey()));
    const v = box.encrypt(SECRET, PURPOSE, 'user-1');
    const [ver, kid, iv, ct, tag] = v.split('.');
    const bad = [
      [ver, kid, flip(iv), ct, tag],
      [ver, kid, iv, flip(ct), tag],
      [ver, kid, iv, flip(ct, ct.length - 2), tag],
      [ver, kid, iv, ct, flip(tag)],
      [ver, kid, iv, ct, tag.slice(0, 8)],
      [ver, kid, iv, ct],
      ['v2', kid, iv, ct, tag],
      [SECRET],
    ].map((p) => p.join('.'));
    for (const b of bad) expect(() => box.decrypt(b, PURPOSE, 'user-1'), b).toThrow();
    expect(() => box.decrypt('', PURPOSE, 'user-1')).toThrow();
  });

  it('refuses a truncated GCM tag (a 4-, 8- or 12-byte prefix of the real 16-byte tag)', () => {
    const box = new SecretBox(b64(rawKey()));
    const [ver, kid, iv, ct, tag] = box.encrypt(SECRET, PURPOSE, 'user-1').split('.');
    const full = Buffer.from(tag, 'base64url');
    for (const n of [4, 8, 12]) {
      const short = [ver, kid, iv, ct, full.subarray(0, n).toString('base64url')].join('.');
      expect(() => box.decrypt(short, PURPOSE, 'user-1'), `${n}-byte tag`).toThrow();
    }
  });

  it('decrypts with a previous key (stale: re-encrypt under the active key), and refuses an unknown key', () => {
    const a = rawKey();
    const b = rawKey();
    const old = new SecretBox(b64(a)).encrypt(SECRET, PURPOSE, 'user-1');
    const rotated = new SecretBox(b64(b), [b64(a)]);
    expect(rotated.keyId).toBe(kidOf(b));
    expect(rotated.decrypt(old, PURPOSE, 'user-1')).toEqual({ plaintext: SECRET, stale: true });
    const fresh = rotated.encrypt(SECRET, PURPOSE, 'user-1');
    expect(fresh.split('.')[1]).toBe(kidOf(b));
    expect(rotated.decrypt(fresh, PURPOSE, 'user-1')).toEqual({ plaintext: SECRET, stale: false });
    // The new key alone reads the re-encrypted value but not the old one: it fails closed.
    const onlyNew = new SecretBox(b64(b));
    expect(onlyNew.decrypt(fresh, PURPOSE, 'user-1').plaintext).toBe(SECRET);
    expect(() => onlyNew.decrypt(old, PURPOSE, 'user-1')).toThrow(/unknown key/);
    // A forged key id does not make a value decrypt under another key.
    const forged = old.split('.');
    forged[1] = kidOf(b);
    expect(() => rotated.decrypt(forged.join('.'), PURPOSE, 'user-1')).toThrow();
  });

  it('accepts 32-byte keys as base64, base64url (padded or not) and hex, all naming the same key', () => {
    const k = rawKey();
    const forms = [
      k.toString('base64'),
      k.toString('base64url'),
      k.toString('base64').replace(/=$/, ''),
      k.toString('hex'),
      k.toString('hex').toUpperCase(),
      `  ${k.toString('base64')}\n`,
    ];
    const v = new SecretBox(forms[0]).encrypt(SECRET, PURPOSE, 'u');
    for (const f of forms) {
      const box = new SecretBox(f);
      expect(box.keyId, f).toBe(kidOf(k));
      expect(box.decrypt(v, PURPOSE, 'u').plaintext).toBe(SECRET);
    }
  });

  it('refuses keys that are not 32 bytes with missing_keys, naming the variable', () => {
    for (const bad of ['', 'secret', randomBytes(16).toString('base64'), randomBytes(31).toString('hex'), randomBytes(33).toString('base64'), 'z'.repeat(64)]) {
      expectMissingKeys(() => new SecretBox(bad), /PORTCULLIS_ENCRYPTION_KEY must be 32 random bytes/);
    }
    expectMissingKeys(() => new SecretBox(b64(rawKey()), [b64(rawKey()), 'short']), /PORTCULLIS_ENCRYPTION_KEYS_PREVIOUS\[1\]/);
  });
});

describe('loadSecretBox', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });
  const tmp = () => (dir = mkdtempSync(join(tmpdir(), 'portcullis-box-')));

  it('uses PORTCULLIS_ENCRYPTION_KEY and the comma-separated previous keys; writes no file, warns nothing', () => {
    const d = tmp();
    const a = rawKey();
    const b = rawKey();
    const c = rawKey();
    const warnings: string[] = [];
    const file = join(d, 'encryption.key');
    const oldA = new SecretBox(b64(a)).encrypt(SECRET, PURPOSE, 'u');
    const oldC = new SecretBox(b64(c)).encrypt(SECRET, PURPOSE, 'u');
    const box = loadSecretBox({ PORTCULLIS_ENCRYPTION_KEY: b64(b), PORTCULLIS_ENCRYPTION_KEYS_PREVIOUS: ` ${b64(a)} ,, ${c.toString('hex')} ` }, file, (m) =>
      warnings.push(m),
    );
    expect(box.keyId).toBe(kidOf(b));
    expect(box.decrypt(oldA, PURPOSE, 'u')).toEqual({ plaintext: SECRET, stale: true });
    expect(box.decrypt(oldC, PURPOSE, 'u')).toEqual({ plaintext: SECRET, stale: true });
    expect(existsSync(file)).toBe(false);
    expect(warnings).toEqual([]);
  });

  it('NODE_ENV=production without a key refuses with missing_keys and generates nothing', () => {
    const d = tmp();
    const file = join(d, 'data', 'encryption.key');
    expectMissingKeys(() => loadSecretBox({ NODE_ENV: 'production' }, file, () => undefined), /PORTCULLIS_ENCRYPTION_KEY/);
    expect(existsSync(file)).toBe(false);
    // Previous keys alone are not an active key.
    expectMissingKeys(
      () => loadSecretBox({ NODE_ENV: 'production', PORTCULLIS_ENCRYPTION_KEYS_PREVIOUS: b64(rawKey()) }, file, () => undefined),
      /PORTCULLIS_ENCRYPTION_KEY/,
    );
    // With a key, production is fine.
    const k = rawKey();
    expect(loadSecretBox({ NODE_ENV: 'production', PORTCULLIS_ENCRYPTION_KEY: b64(k) }, file, () => undefined).keyId).toBe(kidOf(k));
  });

  it('embedded mode generates a 0600 key file (creating the directory) with one warning, then reuses it', () => {
    const d = tmp();
    const file = join(d, 'nested', 'data', 'encryption.key');
    const warnings: string[] = [];
    const first = loadSecretBox({}, file, (m) => warnings.push(m));
    expect(existsSync(file)).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const text = readFileSync(file, 'utf8');
    expect(text).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
    expect(first.keyId).toBe(kidOf(Buffer.from(text.trim(), 'base64')));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(file);
    expect(warnings[0]).toMatch(/PORTCULLIS_ENCRYPTION_KEY/);

    const v = first.encrypt(SECRET, PURPOSE, 'u');
    const second = loadSecretBox({}, file, (m) => warnings.push(m));
    expect(warnings).toHaveLength(1);
    expect(second.keyId).toBe(first.keyId);
    expect(second.decrypt(v, PURPOSE, 'u')).toEqual({ plaintext: SECRET, stale: false });
  });

  it('tightens a loosened key file back to 0600 and refuses a corrupt one', () => {
    const d = tmp();
    const file = join(d, 'encryption.key');
    const k = rawKey();
    writeFileSync(file, `${b64(k)}\n`, { mode: 0o644 });
    expect(loadSecretBox({}, file, () => undefined).keyId).toBe(kidOf(k));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    writeFileSync(file, 'not a key\n');
    expectMissingKeys(() => loadSecretBox({}, file, () => undefined), /32 random bytes/);
  });
});
