import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { Errors, GatewayError, writeProblem, writeProblemToSocket } from '../errors/index.js';
import { wantsHtml } from '../pipeline/index.js';
import { errorPage, type PageContext } from './pages.js';

/** What the responder needs; built once in app.ts. */
export interface ResponderDeps {
  log: Logger;
  /** The pages' context: HTML error pages use the one layout. */
  pages: PageContext;
  /** The client address as resolved through `trust_proxy` (for the log line). */
  clientIp: (req: IncomingMessage) => string;
}

/** Options of {@link Responder.send}. */
export interface SendOptions {
  /**
   * Answer with this HTML instead (a form shown again with its error, or an error page with a
   * way back). Without it, browser navigations get the error page and the rest problem+json.
   */
  html?: (err: GatewayError) => string;
}

/** Options of {@link Responder.sendToSocket}. */
export interface SocketSendOptions {
  /** `Set-Cookie` values to send along. */
  setCookies?: readonly string[];
  /** Send the problem+json body. @default true (see {@link writeProblemToSocket}). */
  body?: boolean;
}

/**
 * The one responder: every error the gateway answers with goes through it, whichever the form
 * (problem+json, the HTML error page, or a raw-socket HTTP response), and it logs each one
 * exactly once — 4xx at info, 5xx at error with the stack. A log line carries the status, the
 * code, the method, the path without its query string and the client address: never a header,
 * a body or a query, so never a secret. The error's `log` fields (an `event`, the upstream or
 * limiter…) join that line, so one failure is one line.
 */
export interface Responder {
  /** Writes `e` (anything thrown: non-gateway errors become an opaque 500) to `res`. */
  send(req: IncomingMessage, res: ServerResponse, e: unknown, opts?: SendOptions): void;
  /** Writes `e` as a complete HTTP/1.1 response on a raw socket (upgrades, CONNECT, unparseable requests) and closes it. */
  sendToSocket(req: IncomingMessage | undefined, socket: Duplex, e: unknown, opts?: SocketSendOptions): void;
}

/** Converts anything thrown into a GatewayError; unknown errors become an opaque 500 (the original is its cause). */
export function toGatewayError(e: unknown): GatewayError {
  if (e instanceof GatewayError) return e;
  return new GatewayError(Errors.internal_error, 'The gateway could not complete the request.', { cause: e });
}

/**
 * Writes `e` to `res` as `html` (when given) or problem+json, without logging. Only for a
 * caller that has logged the failure itself (the rate limiter's store errors); everything else
 * goes through a {@link Responder}.
 */
export function writeError(req: IncomingMessage, res: ServerResponse, e: unknown, html?: (err: GatewayError) => string): void {
  if (res.destroyed || res.writableEnded) return;
  const err = toGatewayError(e);
  if (res.headersSent || !html) {
    // writeProblem destroys a response whose head is out: nothing sensible can follow it.
    writeProblem(res, err);
    return;
  }
  const body = html(err);
  res.writeHead(err.status, {
    'cache-control': 'no-store',
    ...err.headers,
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** Longest path kept in a log line. */
const MAX_LOGGED_PATH = 1024;

/**
 * The path of the request target, and nothing that may carry a secret: no query string or
 * fragment (tokens), no `;` (or `%3B`) parameters (session ids), and for an absolute-form target
 * (`http://user:pass@host/path`) no scheme, userinfo or authority.
 */
export function loggablePath(target: string): string {
  let path = target;
  if (!path.startsWith('/')) {
    // Absolute form (or garbage): keep what follows the authority, if anything.
    const scheme = path.indexOf('://');
    const slash = scheme === -1 ? -1 : path.indexOf('/', scheme + 3);
    path = slash === -1 ? '' : path.slice(slash);
  }
  const end = path.search(/[?#;]|%3b/i);
  return (end === -1 ? path : path.slice(0, end)).slice(0, MAX_LOGGED_PATH);
}

/** The loggable path of `req` (see {@link loggablePath}). */
function pathOf(req: IncomingMessage | undefined): string | undefined {
  if (!req) return undefined;
  // express keeps the path the gateway handed it in originalUrl while its routers rewrite url.
  return loggablePath((req as { originalUrl?: string }).originalUrl ?? req.url ?? '');
}

/** Creates the responder. */
export function createResponder(d: ResponderDeps): Responder {
  function log(req: IncomingMessage | undefined, err: GatewayError): void {
    const fields = {
      // The error's own log fields first: the responder's below win over same-named ones.
      ...err.log,
      status: err.status,
      // Not `code`: the logger redacts that key (it is also the name of a TOTP field).
      error_code: err.code,
      method: req?.method,
      path: pathOf(req),
      ip: req ? d.clientIp(req) : undefined,
    };
    // 4xx are the client's business (info); 5xx are ours (error), logged with the stack of what
    // actually failed. Severity is a class of statuses, not the identity of an error.
    if (err.status < 500) {
      d.log.info({ ...fields, detail: err.message }, 'request refused');
      return;
    }
    const failed = err.cause instanceof Error ? err.cause : err;
    d.log.error({ ...fields, err: failed.message, stack: failed.stack }, 'request failed');
  }

  return {
    send(req, res, e, opts = {}) {
      const err = toGatewayError(e);
      log(req, err);
      writeError(req, res, err, opts.html ?? (wantsHtml(req) ? (x) => errorPage(d.pages, x) : undefined));
    },
    sendToSocket(req, socket, e, opts = {}) {
      const err = toGatewayError(e);
      log(req, err);
      writeProblemToSocket(socket, err, opts.setCookies, { body: opts.body });
    },
  };
}
