import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import {
  CompactSign,
  calculateJwkThumbprint,
  compactVerify,
  createLocalJWKSet,
  exportJWK,
  generateKeyPair,
  importJWK,
  type CryptoKey,
  type JWK,
  type JWSHeaderParameters,
  type FlattenedJWSInput,
} from 'jose';
import { Errors, GatewayError } from '../errors/index.js';

/** The only JWS algorithm the gateway signs or accepts. */
export const SIGNING_ALG = 'EdDSA';

/** One signing key of the key set. */
export interface SigningKey {
  /** Key id, carried in every token header (`kid`). */
  readonly kid: string;
  /** Private key used to sign (non-extractable). */
  readonly privateKey: CryptoKey;
  /** Public JWK (`kty`, `crv`, `x`, `kid`, `alg`, `use`); never contains `d`. */
  readonly publicJwk: Readonly<JWK>;
}

/** Resolves the verification key for a token header from the key set's own public keys. */
export type VerificationKeyResolver = (header: JWSHeaderParameters, token: FlattenedJWSInput) => Promise<CryptoKey>;

/**
 * The gateway's Ed25519 signing keys. The first key signs; all keys (including older ones
 * kept for rotation) verify. Build one with {@link loadKeySet}, {@link readKeyFile} or
 * {@link loadOrCreateKeyFile}.
 */
export class KeySet {
  /** All keys, active first. */
  readonly keys: readonly SigningKey[];
  /** jose resolver over the public keys only (picks by `kid`, rejects alg/kty mismatches). */
  readonly resolveVerificationKey: VerificationKeyResolver;

  private constructor(keys: SigningKey[]) {
    this.keys = Object.freeze(keys);
    const local = createLocalJWKSet({ keys: keys.map((k) => ({ ...k.publicJwk })) });
    this.resolveVerificationKey = (header, token) => {
      // createLocalJWKSet would accept a header without `kid` when only one key is usable;
      // we insist on an explicit kid so every token names the key it claims.
      if (typeof header.kid !== 'string' || header.kid === '') {
        return Promise.reject(new GatewayError(Errors.invalid_token, 'missing kid'));
      }
      return local(header, token);
    };
  }

  /** @internal Use {@link loadKeySet}. */
  static fromKeys(keys: SigningKey[]): KeySet {
    return new KeySet(keys);
  }

  /** The active signing key (the first one). */
  get active(): SigningKey {
    return this.keys[0];
  }

  /** Key ids, active first. */
  get kids(): string[] {
    return this.keys.map((k) => k.kid);
  }

  /** The public JWKS for `/.well-known/jwks.json`: public members only, never `d`. */
  publicJwks(): { keys: JWK[] } {
    return { keys: this.keys.map((k) => ({ ...k.publicJwk })) };
  }
}

function keyError(where: string, msg: string): GatewayError {
  return new GatewayError(Errors.invalid_config, `${where}: ${msg}`);
}

/**
 * Builds a {@link KeySet} from private JWKs (`kty: OKP`, `crv: Ed25519`, with `d` and a unique
 * `kid`). The first key is the active signing key; the others only verify. Each key is
 * self-tested (sign, then verify with its public part) so a JWK whose `x` does not belong to its
 * `d` is rejected at load time rather than producing tokens nobody can verify.
 *
 * @param source - label used in error messages (e.g. the file path)
 * @throws GatewayError `invalid_config` with a message naming the offending key
 */
export async function loadKeySet(jwks: { keys: JWK[] }, source = 'signing keys'): Promise<KeySet> {
  if (jwks === null || typeof jwks !== 'object' || !Array.isArray(jwks.keys)) {
    throw keyError(source, 'expected a JWKS object { "keys": [...] }');
  }
  if (jwks.keys.length === 0) throw keyError(source, 'the key set is empty (at least one signing key is required)');
  const seen = new Set<string>();
  const out: SigningKey[] = [];
  for (const [i, jwk] of jwks.keys.entries()) {
    const where = `${source}, key #${i + 1}`;
    if (jwk === null || typeof jwk !== 'object' || Array.isArray(jwk)) throw keyError(where, 'not a JWK object');
    if (typeof jwk.kid !== 'string' || jwk.kid.trim() === '') throw keyError(where, 'missing "kid"');
    const at = `${where} (kid "${jwk.kid}")`;
    if (seen.has(jwk.kid)) throw keyError(at, 'duplicate kid');
    seen.add(jwk.kid);
    if (jwk.kty !== 'OKP') throw keyError(at, `kty "${String(jwk.kty)}" is not supported: only OKP Ed25519 keys`);
    if (jwk.crv !== 'Ed25519') throw keyError(at, `crv "${String(jwk.crv)}" is not supported: only Ed25519`);
    if (jwk.alg !== undefined && jwk.alg !== SIGNING_ALG && jwk.alg !== 'Ed25519') {
      throw keyError(at, `alg "${String(jwk.alg)}" does not match Ed25519 (use "EdDSA")`);
    }
    if (jwk.use !== undefined && jwk.use !== 'sig') throw keyError(at, `use "${String(jwk.use)}" is not "sig"`);
    if (typeof jwk.x !== 'string' || jwk.x === '') throw keyError(at, 'missing "x"');
    if (typeof jwk.d !== 'string' || jwk.d === '') throw keyError(at, 'missing "d": the key set needs private keys');

    const publicJwk: JWK = Object.freeze({ kty: 'OKP', crv: 'Ed25519', x: jwk.x, kid: jwk.kid, alg: SIGNING_ALG, use: 'sig' });
    let privateKey: CryptoKey;
    try {
      const imported = await importJWK({ kty: 'OKP', crv: 'Ed25519', x: jwk.x, d: jwk.d }, SIGNING_ALG);
      if (imported instanceof Uint8Array) throw new Error('not an asymmetric key');
      privateKey = imported;
      const probe = await new CompactSign(new TextEncoder().encode('portcullis-key-check')).setProtectedHeader({ alg: SIGNING_ALG }).sign(privateKey);
      await compactVerify(probe, await importJWK(publicJwk, SIGNING_ALG));
    } catch (cause) {
      throw new GatewayError(Errors.invalid_config, `${at}: not a valid Ed25519 key pair (x does not match d, or bad encoding)`, {
        cause,
      });
    }
    out.push(Object.freeze({ kid: jwk.kid, privateKey, publicJwk }));
  }
  return KeySet.fromKeys(out);
}

/**
 * Generates a new Ed25519 private signing JWK with `kid` = its RFC 7638 thumbprint,
 * `alg: 'EdDSA'` and `use: 'sig'` (what `portcullis keys generate` prints).
 */
export async function generateSigningJwk(): Promise<JWK> {
  const { privateKey } = await generateKeyPair('Ed25519', { extractable: true });
  const exported = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: exported.x });
  return { kty: 'OKP', crv: 'Ed25519', x: exported.x, d: exported.d, kid, alg: SIGNING_ALG, use: 'sig' };
}

function isNotFound(e: unknown): boolean {
  return (e as NodeJS.ErrnoException)?.code === 'ENOENT';
}

async function parseKeyFile(path: string, text: string): Promise<KeySet> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new GatewayError(Errors.invalid_config, `signing key file ${path} is not valid JSON`, { cause });
  }
  return loadKeySet(parsed as { keys: JWK[] }, `signing key file ${path}`);
}

/**
 * Reads a configured JWKS file (`keys.signing_keys_file`) of private signing keys.
 *
 * @throws GatewayError `missing_keys` when the file does not exist or cannot be read,
 *   `invalid_config` when it is not a valid key set
 */
export async function readKeyFile(path: string): Promise<KeySet> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    const why = isNotFound(cause) ? 'not found' : `cannot be read (${(cause as Error).message})`;
    throw new GatewayError(Errors.missing_keys, `signing key file ${path} ${why}`, { cause });
  }
  return parseKeyFile(path, text);
}

/**
 * Embedded mode: loads the JWKS at `path`, or when there is none generates one Ed25519 key,
 * writes it with mode 0600 (creating the directory with mode 0700) and logs a warning.
 * Also warns when an existing file is readable by group or others.
 *
 * @param log - receives human-readable warnings
 */
export async function loadOrCreateKeyFile(path: string, log: (msg: string) => void): Promise<KeySet> {
  try {
    const text = await readFile(path, 'utf8');
    await warnIfPermissive(path, log);
    return await parseKeyFile(path, text);
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const jwk = await generateSigningJwk();
  try {
    // 'wx': never overwrite a key file another process created in the meantime.
    await writeFile(path, `${JSON.stringify({ keys: [jwk] }, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException)?.code === 'EEXIST') return parseKeyFile(path, await readFile(path, 'utf8'));
    throw e;
  }
  log(
    `no signing keys configured: generated a new Ed25519 signing key (kid ${jwk.kid}) in ${path}. ` +
      'Tokens signed with it are only valid for gateways that share this file; set keys.signing_keys_file for production.',
  );
  return loadKeySet({ keys: [jwk] }, `signing key file ${path}`);
}

async function warnIfPermissive(path: string, log: (msg: string) => void): Promise<void> {
  try {
    const st = await stat(path);
    if ((st.mode & 0o077) !== 0) {
      log(`signing key file ${path} is readable by other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    }
  } catch {
    // stat failing right after a successful read is not worth failing startup over.
  }
}
