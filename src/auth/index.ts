/**
 * Authentication building blocks: argon2id password hashing, the password policy and username
 * validation.
 */
export { PasswordHasher, type PasswordHasherOptions } from './password.js';
export { PasswordPolicy, type PasswordContext, type PasswordPolicyOptions } from './policy.js';
export { USERNAME_PATTERN, validateUsername } from './username.js';
export { AuthService, dependency, requireStrings, type TokenIdentity, type TokenResponse } from './login-flow.js';
