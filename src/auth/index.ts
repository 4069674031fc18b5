/**
 * Authentication building blocks: argon2id password hashing, the password policy and username
 * validation.
 */
export { PasswordHasher, DEFAULT_ARGON2_MAX_QUEUE, defaultArgon2Concurrency, type PasswordHasherOptions } from './password.js';
export { WorkQueue, busyError, type WorkQueueOptions } from './work-queue.js';
export { PasswordPolicy, type PasswordContext, type PasswordPolicyOptions } from './policy.js';
export { USERNAME_PATTERN, validateUsername } from './username.js';
export { AuthService, dependency, requireStrings, type LoginResult, type SessionView, type TokenIdentity, type TokenResponse } from './login-flow.js';
export { Lockout, lockedError } from './lockout.js';
export { MfaService, MFA_MAX_ATTEMPTS } from './mfa.js';
export { SecretBox, loadSecretBox } from './secret-box.js';

import type { Config } from '../config/index.js';
import type { Metrics } from '../metrics/index.js';
import { PasswordHasher as Hasher, defaultArgon2Concurrency as argon2Slots } from './password.js';
import { PasswordPolicy as Policy } from './policy.js';
import { WorkQueue as Queue } from './work-queue.js';

/**
 * The hasher and policy a config's `auth` section describes (one place maps the keys). With
 * `metrics`, the argon2 queue's rejections and depth are exported. `processes` (the number of
 * worker processes sharing the machine) divides the default argon2 concurrency among them.
 */
export function passwordTools(auth: Config['auth'], opts: { metrics?: Metrics; processes?: number } = {}): { hasher: Hasher; policy: Policy } {
  const { metrics } = opts;
  const processes = Math.max(1, opts.processes ?? 1);
  const queue = new Queue({
    concurrency: auth.argon2.max_concurrent ?? Math.max(1, Math.floor(argon2Slots() / processes)),
    maxQueue: auth.argon2.max_queue,
    onReject: metrics ? () => metrics.passwordQueueRejections.inc() : undefined,
    onChange: metrics ? (_running, queued) => metrics.passwordQueueDepth.set(queued) : undefined,
  });
  return {
    hasher: new Hasher({ memoryKib: auth.argon2.memory_kib, timeCost: auth.argon2.time_cost, parallelism: auth.argon2.parallelism, queue }),
    policy: new Policy({ minLength: auth.password.min_length, maxLength: auth.password.max_length, minScore: auth.password.min_zxcvbn_score }),
  };
}
