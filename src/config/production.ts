import { Errors, GatewayError } from '../errors/index.js';
import type { Config } from './schema.js';

/** Whether this process runs in production mode (SPEC §1). */
export const isProduction = (env: NodeJS.ProcessEnv): boolean => env.NODE_ENV === 'production';

/**
 * What production mode (`NODE_ENV=production`) needs and this config and environment lack.
 * Embedded mode guesses each of them (the listen address as the public URL, keys generated
 * into `data_dir`); behind a load balancer those guesses break sign-in or differ per replica,
 * so production refuses to guess.
 */
export function productionGaps(
  config: { readonly public_url?: string; readonly keys?: { readonly signing_keys_file?: string } },
  env: NodeJS.ProcessEnv,
): string[] {
  if (!isProduction(env)) return [];
  const gaps: string[] = [];
  if (!config.public_url) gaps.push('public_url (the URL users reach the gateway at; PORTCULLIS_PUBLIC_URL in the shipped config)');
  if (!config.keys?.signing_keys_file && !env.PORTCULLIS_SIGNING_KEYS)
    gaps.push('signing keys (keys.signing_keys_file or PORTCULLIS_SIGNING_KEYS; make them with `portcullis keys generate`)');
  if (!env.PORTCULLIS_ENCRYPTION_KEY) gaps.push('the encryption key (PORTCULLIS_ENCRYPTION_KEY: openssl rand -base64 32)');
  return gaps;
}

/** Throws one error naming everything production mode lacks (the CLI prints it as one line, exit 2). */
export function assertProductionReady(config: Config, env: NodeJS.ProcessEnv): void {
  const gaps = productionGaps(config, env);
  if (gaps.length) throw new GatewayError(Errors.invalid_config, `NODE_ENV=production refuses to start without ${gaps.join('; ')}`);
}
