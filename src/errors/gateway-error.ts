import { Errors, errorDef, type ErrorDef } from './registry.js';

/** Options of a {@link GatewayError}. */
export interface GatewayErrorOptions {
  /** Extra members for the problem+json body (e.g. `errors`, `reasons`). */
  extra?: Record<string, unknown>;
  /** Extra response headers (e.g. `Retry-After`). */
  headers?: Record<string, string>;
  /** What went wrong underneath (logged with a 5xx, never sent). */
  cause?: unknown;
  /**
   * Fields the responder adds to its one log line for this error (e.g. `event`, `upstream`,
   * `limiter`), so a failure is described by one line; never sent to the client. The
   * responder's own fields (status, code, method, path, address) win over same-named ones.
   */
  log?: Record<string, unknown>;
}

/**
 * An error with a registered definition: a stable `code` (the string the problem+json `code`
 * field carries) and an HTTP `status`. Only the http layer's responder (and the proxy, for
 * upstream failures) turns them into responses; everything else throws them.
 */
export class GatewayError extends Error {
  /** The registry row this error is an instance of. */
  readonly def: ErrorDef;
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
  /** Extra fields for the responder's log line (never sent). */
  readonly log: Record<string, unknown> | undefined;

  /** `detail` is the problem+json `detail` (what the client is told); it defaults to the title. */
  constructor(def: ErrorDef, detail?: string, opts: GatewayErrorOptions = {}) {
    super(detail ?? def.title, opts.cause === undefined ? undefined : { cause: opts.cause });
    // The type brand stops inline definitions at compile time; a spread copy (`{...Errors.x,
    // code: 'new'}`) gets past it, so the registry row itself is required at run time too.
    if (errorDef(def.code) !== def) throw new TypeError(`unregistered error definition "${def.code}": add it to src/errors/registry.ts`);
    this.name = 'GatewayError';
    this.def = def;
    this.code = def.code;
    this.status = def.status;
    this.title = def.title;
    this.extra = opts.extra;
    this.headers = opts.headers;
    this.log = opts.log;
  }

  /** The same error with `headers` added under its own (the error's own headers win). */
  withHeaders(headers: Readonly<Record<string, string>>): GatewayError {
    return new GatewayError(this.def, this.message, { extra: this.extra, headers: { ...headers, ...this.headers }, cause: this.cause, log: this.log });
  }

  /** The same error with `fields` added to its log fields (see {@link GatewayErrorOptions.log}). */
  withLog(fields: Readonly<Record<string, unknown>>): GatewayError {
    return new GatewayError(this.def, this.message, { extra: this.extra, headers: this.headers, cause: this.cause, log: { ...this.log, ...fields } });
  }
}

/** True when `e` is a {@link GatewayError} of the given definition: branch on identity, never on status numbers. */
export function is(e: GatewayError, def: ErrorDef): boolean;
export function is(e: unknown, def: ErrorDef): e is GatewayError;
export function is(e: unknown, def: ErrorDef): boolean {
  return e instanceof GatewayError && e.code === def.code;
}

/**
 * The 401 of an unauthenticated request, with its RFC 6750 challenge: `invalid_token` (and
 * `error="invalid_token"`) when a token was sent and refused, `unauthenticated` when none was.
 */
export function unauthenticated(tokenSent: boolean, detail?: string): GatewayError {
  return tokenSent
    ? new GatewayError(Errors.invalid_token, detail ?? 'The access token is invalid or expired.', {
        headers: { 'www-authenticate': 'Bearer realm="portcullis", error="invalid_token"' },
      })
    : new GatewayError(Errors.unauthenticated, detail ?? 'Sign in or send a bearer token.', { headers: { 'www-authenticate': 'Bearer realm="portcullis"' } });
}
