/**
 * The one registry of error codes. Every code the gateway can answer with (or exit on) is
 * defined here once: its HTTP status, its title, and the anchor of its row in the table of
 * codes in `docs/auth-api.md`. Codes are public contract strings (the problem+json `code`
 * field, and the tail of its `type` URI): never rename one that has shipped.
 *
 * `src/errors/registry.test.ts` pins the whole table and checks the docs, so every change here
 * is deliberate and documented.
 */

/** Only the registry makes definitions (a type-level brand): a code cannot be invented inline. */
declare const registered: unique symbol;

/** One row of the registry. */
export interface ErrorDef {
  /** Stable snake_case code, part of the public contract. */
  readonly code: string;
  /** The HTTP status this error answers with. */
  readonly status: number;
  /** Short human title (problem+json `title`). */
  readonly title: string;
  /** Where the code is documented: `docs/auth-api.md#code-…`. */
  readonly docs: string;
  readonly [registered]: true;
}

/** The page that documents every code. */
export const ERROR_DOCS_PAGE = 'docs/auth-api.md';

/** The anchor of a code's row in {@link ERROR_DOCS_PAGE} (`bad_path` → `code-bad-path`). */
export function errorAnchor(code: string): string {
  return `code-${code.replace(/_/g, '-')}`;
}

// [status, title]. Grouped by where the errors arise; the groups mean nothing to callers.
const ROWS = {
  // The request itself: framing, path, method, Host (pipeline and policy).
  bad_request: [400, 'Malformed request'],
  bad_path: [400, 'Bad request path'],
  bad_framing: [400, 'Ambiguous message framing'],
  bad_host: [400, 'Invalid Host header'],
  too_many_headers: [431, 'Too many header fields'],
  method_not_allowed: [405, 'Method not allowed'],
  no_route: [404, 'Not found'],

  // Authentication and authorization (the decision function).
  unauthenticated: [401, 'Authentication required'],
  invalid_token: [401, 'Invalid or expired token'],
  access_denied: [403, 'Access denied'],
  forbidden: [403, 'Forbidden'],
  mfa_required: [403, 'Multi-factor authentication required'],
  csrf: [403, 'Cross-site request refused'],

  // Upstreams (the proxy transport).
  upstream_unavailable: [502, 'Upstream unavailable'],
  upstream_timeout: [504, 'Upstream timed out'],

  // The auth API: input.
  unsupported_media_type: [415, 'Unsupported media type'],
  malformed_json: [400, 'Malformed JSON body'],
  body_too_large: [413, 'Request body too large'],
  invalid_input: [422, 'Invalid input'],

  // The auth API: credentials, sessions, second factor.
  invalid_credentials: [401, 'Invalid username or password'],
  wrong_password: [403, 'Current password is wrong'],
  weak_password: [422, 'Password rejected by policy'],
  invalid_refresh_token: [401, 'Invalid refresh token'],
  session_not_found: [404, 'Session not found'],
  invalid_mfa_code: [401, 'Invalid code'],
  mfa_not_set_up: [409, 'Two-factor authentication is not set up'],
  mfa_already_enabled: [409, 'Two-factor authentication is already on'],
  user_exists: [409, 'User already exists'],

  // Abuse protection and capacity.
  account_locked: [423, 'Account temporarily locked'],
  rate_limited: [429, 'Too many requests'],
  busy: [503, 'Too busy; try again shortly'],
  service_unavailable: [503, 'Service temporarily unavailable'],

  // Anything else that went wrong inside the gateway (the responder's opaque 500).
  internal_error: [500, 'Internal error'],

  // Startup and the CLI only (exit 2): never an HTTP response.
  invalid_config: [500, 'Invalid configuration'],
  missing_keys: [500, 'Signing or encryption keys missing'],
} as const satisfies Record<string, readonly [number, string]>;

/** Every registered code. */
export type ErrorCode = keyof typeof ROWS;

function build(): { readonly [C in ErrorCode]: ErrorDef & { readonly code: C } } {
  const out: Record<string, ErrorDef> = {};
  for (const [code, [status, title]] of Object.entries(ROWS)) {
    out[code] = Object.freeze({ code, status, title, docs: `${ERROR_DOCS_PAGE}#${errorAnchor(code)}` }) as unknown as ErrorDef;
  }
  return Object.freeze(out) as { readonly [C in ErrorCode]: ErrorDef & { readonly code: C } };
}

/** The registry: `Errors.bad_path` is the definition of the code `bad_path`. */
export const Errors = build();

/** The definition of `code`, or undefined when no such code is registered. */
export function errorDef(code: string): ErrorDef | undefined {
  return Object.hasOwn(Errors, code) ? Errors[code as ErrorCode] : undefined;
}
