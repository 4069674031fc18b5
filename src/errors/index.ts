/**
 * Errors with a stable `code` (the same string the problem+json `code` field carries) and an
 * HTTP `status`. Only `http/` turns them into responses; everything else throws them.
 */
export class GatewayError extends Error {
  /** Stable snake_case code, part of the public contract. */
  readonly code: string;
  /** HTTP status the error maps to. */
  readonly status: number;
  /** Short human title (problem+json `title`). */
  readonly title: string;
  /** Extra members for the problem+json body (e.g. `errors`, `reasons`). */
  readonly extra: Record<string, unknown> | undefined;
  /** Extra response headers (e.g. `Retry-After`). */
  readonly headers: Record<string, string> | undefined;

  constructor(
    def: ErrorDef,
    detail?: string,
    opts: { extra?: Record<string, unknown>; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(detail ?? def.title, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'GatewayError';
    this.code = def.code;
    this.status = def.status;
    this.title = def.title;
    this.extra = opts.extra;
    this.headers = opts.headers;
  }
}

/** One row of an error table. */
export interface ErrorDef {
  readonly code: string;
  readonly status: number;
  readonly title: string;
}

function table<T extends Record<string, [number, string]>>(rows: T): { [K in keyof T]: ErrorDef } {
  const out = {} as { [K in keyof T]: ErrorDef };
  for (const [code, [status, title]] of Object.entries(rows)) {
    (out as Record<string, ErrorDef>)[code] = Object.freeze({ code, status, title });
  }
  return Object.freeze(out);
}

/** Request pipeline and policy errors. */
export const PolicyErrors = table({
  bad_path: [400, 'Bad request path'],
  bad_request: [400, 'Malformed request'],
  no_route: [404, 'Not found'],
  access_denied: [403, 'Access denied'],
  forbidden: [403, 'Forbidden'],
  mfa_required: [403, 'Multi-factor authentication required'],
  csrf: [403, 'Cross-site request refused'],
  unauthenticated: [401, 'Authentication required'],
  invalid_token: [401, 'Invalid or expired token'],
  payload_too_large: [413, 'Request body too large'],
  bad_framing: [400, 'Ambiguous message framing'],
  bad_host: [400, 'Invalid Host header'],
  too_many_headers: [431, 'Too many header fields'],
});

/** Upstream errors. */
export const ProxyErrors = table({
  upstream_unavailable: [502, 'Upstream unavailable'],
  upstream_timeout: [504, 'Upstream timed out'],
});

/** Auth API errors. */
export const AuthErrors = table({
  invalid_credentials: [401, 'Invalid username or password'],
  invalid_input: [422, 'Invalid input'],
  weak_password: [422, 'Password rejected by policy'],
  malformed_json: [400, 'Malformed JSON body'],
  unsupported_media_type: [415, 'Unsupported media type'],
  body_too_large: [413, 'Request body too large'],
  user_exists: [409, 'User already exists'],
  user_not_found: [404, 'User not found'],
  account_locked: [423, 'Account temporarily locked'],
  rate_limited: [429, 'Too many requests'],
  service_unavailable: [503, 'Service temporarily unavailable'],
  busy: [503, 'Too busy; try again shortly'],
  method_not_allowed: [405, 'Method not allowed'],
  wrong_password: [403, 'Current password is wrong'],
  session_not_found: [404, 'Session not found'],
  invalid_refresh_token: [401, 'Invalid refresh token'],
});

/** Configuration errors (CLI exit 2, never an HTTP response). */
export const ConfigErrors = table({
  invalid_config: [500, 'Invalid configuration'],
  missing_keys: [500, 'Signing or encryption keys missing'],
});

/** True when `e` is a GatewayError with the given definition. */
export function isError(e: unknown, def: ErrorDef): e is GatewayError {
  return e instanceof GatewayError && e.code === def.code;
}
