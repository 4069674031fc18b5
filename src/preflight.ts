import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import type { Config } from './config/index.js';
import { assertProductionReady } from './config/production.js';
import { Errors, GatewayError } from './errors/index.js';
import { loadKeySet, readKeyFile, type KeySet } from './tokens/index.js';
import { loadSecretBox } from './auth/secret-box.js';

/** The configured signing keys (file or `PORTCULLIS_SIGNING_KEYS`), parsed; undefined when none are configured. */
export async function configuredKeys(config: Config, env: NodeJS.ProcessEnv): Promise<KeySet | undefined> {
  if (config.keys.signing_keys_file) return readKeyFile(config.keys.signing_keys_file);
  if (env.PORTCULLIS_SIGNING_KEYS) {
    let jwks: unknown;
    try {
      jwks = JSON.parse(env.PORTCULLIS_SIGNING_KEYS);
    } catch {
      throw new GatewayError(Errors.missing_keys, 'PORTCULLIS_SIGNING_KEYS is not valid JSON (expected a JWKS with private keys).');
    }
    return loadKeySet(jwks as Parameters<typeof loadKeySet>[0], 'PORTCULLIS_SIGNING_KEYS');
  }
  return undefined;
}

/**
 * What `serve` checks before it opens anything, and `config check` checks alike, so a config
 * the check accepts starts: production mode's requirements (public_url, keys, encryption key),
 * the configured signing keys and encryption key parsed for real (not merely present), and
 * `workers` above 1 only with shared state. Writes nothing.
 */
export async function preflight(config: Config, env: NodeJS.ProcessEnv): Promise<void> {
  assertProductionReady(config, env);
  await configuredKeys(config, env);
  if (env.PORTCULLIS_ENCRYPTION_KEY) loadSecretBox(env, join(config.data_dir, 'encryption.key'), () => undefined);
  const workers = config.workers === 'auto' ? availableParallelism() : config.workers;
  if (workers > 1 && !config.storage.redis_url)
    throw new GatewayError(
      Errors.invalid_config,
      `workers: ${config.workers} needs storage.redis_url: in-process state (rate limits, lockouts, revocations, TOTP steps) is not shared between processes`,
    );
}
