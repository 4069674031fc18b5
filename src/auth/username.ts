import { Errors, GatewayError } from '../errors/index.js';

/** Usernames after lower-casing (SPEC §4). */
export const USERNAME_PATTERN = /^[a-z0-9][a-z0-9._@-]{0,63}$/;

function reject(message: string): never {
  throw new GatewayError(Errors.invalid_input, `Invalid username: ${message}`, {
    extra: { errors: [{ field: 'username', message }] },
  });
}

/**
 * Validates and canonicalizes a username: lower-cased, 1–64 characters, starting with a letter
 * or digit, then letters, digits, `.`, `_`, `@` or `-`.
 *
 * Only ASCII is lower-cased: non-ASCII input is rejected before case folding, so characters
 * such as the Kelvin sign (U+212A, which `toLowerCase()` turns into `k`) cannot alias an
 * existing ASCII username.
 *
 * @throws GatewayError `invalid_input` (422) with `extra.errors: [{ field: 'username', message }]`
 */
export function validateUsername(input: unknown): string {
  if (typeof input !== 'string') reject('must be a string');
  if (input.length === 0) reject('is required');
  if (input.length > 64) reject('must be at most 64 characters');
  if (!/^[\x20-\x7e]*$/.test(input)) reject('may only contain ASCII letters, digits, ".", "_", "@" and "-"');
  const name = input.toLowerCase();
  if (!USERNAME_PATTERN.test(name)) {
    reject('must start with a letter or digit and contain only letters, digits, ".", "_", "@" and "-"');
  }
  return name;
}
