import type { IncomingMessage, ServerResponse } from 'node:http';
import { Errors, GatewayError, PolicyErrors } from '../errors/index.js';
import { writeProblem } from '../proxy/problem.js';
import { wantsHtml } from '../pipeline/handler.js';

/** True for a browser navigation: GET/HEAD that prefers HTML (one definition, the pipeline's). */
export { wantsHtml };

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
/** HTML-escapes text for element content and attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESC[c]);
}

/** Converts anything thrown into a GatewayError; unknown errors become an opaque 500. */
export function toGatewayError(e: unknown): GatewayError {
  if (e instanceof GatewayError) return e;
  return new GatewayError(Errors.internal_error, 'The gateway could not complete the request.', { cause: e });
}

/**
 * Writes an error as problem+json, or as a small HTML page for browsers. Only the http layer
 * (and the proxy, for upstream failures) turns errors into responses.
 */
export function sendError(req: IncomingMessage, res: ServerResponse, e: unknown, extraHeaders: Record<string, string> = {}): void {
  const err = toGatewayError(e);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const headers: Record<string, string> = { 'cache-control': 'no-store', ...err.headers, ...extraHeaders };
  if (wantsHtml(req)) {
    const body = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${err.status} ${escapeHtml(err.title)}</title></head>` +
      `<body><main><h1>${escapeHtml(err.title)}</h1><p>${escapeHtml(err.message)}</p><p><small>${err.status} · ${escapeHtml(err.code)}</small></p></main></body></html>`;
    res.writeHead(err.status, { ...headers, 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  writeProblem(res, err);
}

/** 401 for API clients, with the RFC 6750 challenge. */
export function unauthenticated(tokenSent: boolean, detail?: string): GatewayError {
  const challenge = tokenSent ? 'Bearer realm="portcullis", error="invalid_token"' : 'Bearer realm="portcullis"';
  return new GatewayError(tokenSent ? PolicyErrors.invalid_token : PolicyErrors.unauthenticated, detail ?? (tokenSent ? 'The access token is invalid or expired.' : 'Sign in or send a bearer token.'), {
    headers: { 'www-authenticate': challenge },
  });
}
