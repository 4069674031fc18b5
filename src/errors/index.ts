/**
 * Errors: one registry of codes ({@link Errors}), the {@link GatewayError} that carries one,
 * {@link is} to branch on identity, and the problem+json wire forms.
 */
import { type GatewayError, is } from './gateway-error.js';
import { Errors, type ErrorCode, type ErrorDef } from './registry.js';

export { Errors, errorDef, errorAnchor, ERROR_DOCS_PAGE, type ErrorCode, type ErrorDef } from './registry.js';
export { GatewayError, is, unauthenticated, type GatewayErrorOptions } from './gateway-error.js';
export { problemBody, problemType, writeProblem, writeProblemToSocket, type ProblemBody, type SocketProblemOptions } from './problem.js';

function view<C extends ErrorCode>(codes: readonly C[]): { readonly [K in C]: (typeof Errors)[K] } {
  return Object.freeze(Object.fromEntries(codes.map((c) => [c, Errors[c]]))) as { readonly [K in C]: (typeof Errors)[K] };
}

/**
 * Request and policy codes: the same definitions as {@link Errors}, under their old area name.
 * @deprecated Use {@link Errors}.
 */
export const PolicyErrors = view([
  'bad_path',
  'bad_request',
  'no_route',
  'access_denied',
  'forbidden',
  'mfa_required',
  'csrf',
  'unauthenticated',
  'invalid_token',
  'bad_framing',
  'bad_host',
  'too_many_headers',
]);

/** @deprecated Use {@link Errors}. */
export const ProxyErrors = view(['upstream_unavailable', 'upstream_timeout']);

/** @deprecated Use {@link Errors}. */
export const AuthErrors = view([
  'invalid_credentials',
  'invalid_input',
  'weak_password',
  'malformed_json',
  'unsupported_media_type',
  'body_too_large',
  'user_exists',
  'account_locked',
  'rate_limited',
  'service_unavailable',
  'busy',
  'method_not_allowed',
  'wrong_password',
  'session_not_found',
  'invalid_refresh_token',
]);

/** @deprecated Use {@link Errors}. */
export const ConfigErrors = view(['invalid_config', 'missing_keys']);

/** @deprecated Use {@link is}. */
export function isError(e: unknown, def: ErrorDef): e is GatewayError {
  return is(e, def);
}
