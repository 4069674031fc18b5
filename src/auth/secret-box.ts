import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Errors, GatewayError } from '../errors/index.js';

/** A 32-byte master key and its id (the first 8 bytes of its SHA-256, hex). */
interface MasterKey {
  id: string;
  key: Buffer;
}

function parseKey(text: string, source: string): MasterKey {
  const t = text.trim();
  let key: Buffer | undefined;
  if (/^[0-9a-fA-F]{64}$/.test(t)) key = Buffer.from(t, 'hex');
  else if (/^[A-Za-z0-9+/_-]{43}=?$/.test(t)) key = Buffer.from(t.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (key?.length !== 32)
    throw new GatewayError(Errors.missing_keys, `${source} must be 32 random bytes, base64 or hex (make one with: openssl rand -base64 32)`);
  return { id: createHash('sha256').update(key).digest('hex').slice(0, 16), key };
}

/**
 * AES-256-GCM for secrets at rest (TOTP secrets). Each ciphertext names the key that made it,
 * so keys can rotate: the active key encrypts, previous keys still decrypt, and `decrypt`
 * says when a value should be re-encrypted. Per-purpose keys are derived with HKDF, and the
 * caller's context (e.g. the user id) is bound as associated data, so a ciphertext cannot be
 * moved to another row.
 */
export class SecretBox {
  private readonly active: MasterKey;
  private readonly byId: Map<string, MasterKey>;

  constructor(active: string, previous: readonly string[] = []) {
    this.active = parseKey(active, 'PORTCULLIS_ENCRYPTION_KEY');
    this.byId = new Map([this.active, ...previous.map((p, i) => parseKey(p, `PORTCULLIS_ENCRYPTION_KEYS_PREVIOUS[${i}]`))].map((k) => [k.id, k]));
  }

  /** Id of the active key. */
  get keyId(): string {
    return this.active.id;
  }

  private derive(k: MasterKey, purpose: string): Buffer {
    return Buffer.from(hkdfSync('sha256', k.key, Buffer.alloc(0), `portcullis:${purpose}`, 32));
  }

  /** `v1.<keyId>.<iv>.<ciphertext>.<tag>` (base64url parts). */
  encrypt(plaintext: string, purpose: string, context: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.derive(this.active, purpose), iv);
    c.setAAD(Buffer.from(context));
    const ct = Buffer.concat([c.update(plaintext, 'utf8'), c.final()]);
    return ['v1', this.active.id, iv.toString('base64url'), ct.toString('base64url'), c.getAuthTag().toString('base64url')].join('.');
  }

  /** Decrypts; `stale` is true when another key than the active one made it. Throws on tampering or an unknown key. */
  decrypt(value: string, purpose: string, context: string): { plaintext: string; stale: boolean } {
    const [v, id, iv, ct, tag] = value.split('.');
    const k = this.byId.get(id ?? '');
    if (v !== 'v1' || !k || !iv || ct === undefined || !tag) throw new Error('secret was encrypted with an unknown key or format');
    // authTagLength pins the full 16-byte tag: Node would otherwise accept a truncated one.
    const d = createDecipheriv('aes-256-gcm', this.derive(k, purpose), Buffer.from(iv, 'base64url'), { authTagLength: 16 });
    d.setAAD(Buffer.from(context));
    d.setAuthTag(Buffer.from(tag, 'base64url'));
    const plaintext = Buffer.concat([d.update(Buffer.from(ct, 'base64url')), d.final()]).toString('utf8');
    return { plaintext, stale: k.id !== this.active.id };
  }
}

/**
 * The encryption key from the environment; embedded mode generates one into `dataDir`
 * (mode 0600) with a warning; production refuses to start without one.
 */
export function loadSecretBox(env: NodeJS.ProcessEnv, dataFile: string, warn: (msg: string) => void): SecretBox {
  const previous = (env.PORTCULLIS_ENCRYPTION_KEYS_PREVIOUS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (env.PORTCULLIS_ENCRYPTION_KEY) return new SecretBox(env.PORTCULLIS_ENCRYPTION_KEY, previous);
  if (env.NODE_ENV === 'production') {
    throw new GatewayError(Errors.missing_keys, 'NODE_ENV=production needs PORTCULLIS_ENCRYPTION_KEY (32 random bytes, base64: openssl rand -base64 32).');
  }
  if (!existsSync(dataFile)) {
    mkdirSync(dirname(dataFile), { recursive: true, mode: 0o700 });
    writeFileSync(dataFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
    warn(`no PORTCULLIS_ENCRYPTION_KEY: generated an encryption key in ${dataFile}; set PORTCULLIS_ENCRYPTION_KEY for production`);
  }
  chmodSync(dataFile, 0o600);
  return new SecretBox(readFileSync(dataFile, 'utf8'), previous);
}
