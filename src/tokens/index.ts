/**
 * Tokens: the gateway's Ed25519 key set (JWKS), and signing/verification of access tokens and
 * upstream assertions (refresh and MFA tokens reserve their own `typ`).
 */
export {
  KeySet,
  SIGNING_ALG,
  generateSigningJwk,
  loadKeySet,
  loadOrCreateKeyFile,
  readKeyFile,
  type SigningKey,
  type VerificationKeyResolver,
} from './keys.js';
export {
  ASSERTION_TTL_SECONDS,
  TokenService,
  TokenTypes,
  type AccessClaims,
  type AccessTokenInput,
  type AssertionClaims,
  type AssertionInput,
  type TokenKind,
  type TokenServiceOptions,
} from './token-service.js';
export { VerifiedTokenCache } from './verified-cache.js';
