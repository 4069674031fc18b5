/**
 * Authentication building blocks: argon2id password hashing, the password policy and username
 * validation.
 */
export { PasswordHasher, type PasswordHasherOptions } from './password.js';
export { PasswordPolicy, type PasswordContext, type PasswordPolicyOptions } from './policy.js';
export { USERNAME_PATTERN, validateUsername } from './username.js';
export { AuthService, dependency, requireStrings, type LoginResult, type TokenIdentity, type TokenResponse } from './login-flow.js';
export { Lockout, lockedError } from './lockout.js';
export { MfaService, MFA_MAX_ATTEMPTS } from './mfa.js';
export { SecretBox, loadSecretBox } from './secret-box.js';

import type { Config } from '../config/index.js';
import { PasswordHasher as Hasher } from './password.js';
import { PasswordPolicy as Policy } from './policy.js';

/** The hasher and policy a config's `auth` section describes (one place maps the keys). */
export function passwordTools(auth: Config['auth']): { hasher: Hasher; policy: Policy } {
  return {
    hasher: new Hasher({ memoryKib: auth.argon2.memory_kib, timeCost: auth.argon2.time_cost, parallelism: auth.argon2.parallelism }),
    policy: new Policy({ minLength: auth.password.min_length, maxLength: auth.password.max_length, minScore: auth.password.min_zxcvbn_score }),
  };
}
