import type { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { Errors, GatewayError, writeProblem, writeProblemToSocket } from '../errors/index.js';
import { type AccessLine, REQUEST_ID_HEADER, loggablePath, loggedPathOf, newRequestId, recordOf, wantsHtml } from '../pipeline/index.js';
import { normalizeIp } from '../proxy/index.js';
import { describeDependencyError } from './admin.js';
import { errorPage, forPeople, type PageContext } from './pages.js';

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

export { loggablePath };

/** The `Retry-After` already set on `res` (the rate limiter sets it before answering), if any. */
function retryAfterOf(res: ServerResponse): string | undefined {
  const v = res.headersSent ? undefined : res.getHeader('retry-after');
  return typeof v === 'string' || typeof v === 'number' ? String(v) : undefined;
}

/** Creates the responder. */
export function createResponder(d: ResponderDeps): Responder {
  function log(req: IncomingMessage | undefined, err: GatewayError, requestId: string, ip: string | undefined): void {
    const fields: Record<string, unknown> = {
      // The error's own log fields first: the responder's below win over same-named ones.
      ...err.log,
      request_id: requestId,
      status: err.status,
      // Not `code`: the logger redacts that key (it is also the name of a TOTP field).
      error_code: err.code,
      method: req?.method,
      // The normalized path once the pipeline has one, never a query string (loggedPathOf).
      path: req ? loggedPathOf(req, recordOf(req)) : undefined,
      ip,
    };
    // A backing service that failed is named in words beside the raw cause (`err`, `stack`).
    if (err.log?.event === 'dependency_failure' && err.cause !== undefined) fields.error = describeDependencyError(err.cause);
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
      // The pipeline gave the request its id and put it on the response already; a request it
      // never saw gets one here, so the answer and the line still share one.
      let id = recordOf(req)?.id;
      if (id === undefined) {
        id = newRequestId();
        if (!res.headersSent) res.setHeader(REQUEST_ID_HEADER, id);
      }
      log(req, err, id, d.clientIp(req));
      const html = opts.html ?? (wantsHtml(req) ? (x: GatewayError) => errorPage(d.pages, x) : undefined);
      // A page (the error page, or a form shown again) says a 423's or 429's wait in words, from
      // the Retry-After the error carries or the rate limiter has already set on the response.
      writeError(req, res, err, html && ((x) => html(forPeople(x, x.headers?.['retry-after'] ?? retryAfterOf(res)))));
    },
    sendToSocket(req, socket, e, opts = {}) {
      let err = toGatewayError(e);
      const rec = recordOf(req);
      const id = rec?.id ?? newRequestId();
      if (err.headers?.[REQUEST_ID_HEADER] === undefined) err = err.withHeaders({ [REQUEST_ID_HEADER]: id });
      const ip = req ? d.clientIp(req) : normalizeIp(socket instanceof Socket ? (socket.remoteAddress ?? '') : '');
      log(req, err, id, ip);
      writeProblemToSocket(socket, err, opts.setCookies, { body: opts.body });
      // A request the pipeline never saw (CONNECT, or one Node could not parse) ends here: its
      // access line is this answer's. The pipeline writes the line of every other request.
      if (!rec && d.log.isLevelEnabled('info')) {
        const line: AccessLine = {
          event: 'request',
          request_id: id,
          method: req?.method ?? null,
          path: (req && loggablePath(req.url ?? '')) || null,
          route: null,
          status: err.status,
          duration_ms: null,
          upstream: null,
          user: null,
          ip: ip || null,
        };
        d.log.info(line, 'request');
      }
    },
  };
}
