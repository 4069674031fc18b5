import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { GatewayError } from './gateway-error.js';

/**
 * The wire forms of a {@link GatewayError}: the problem+json (RFC 9457) body, written to a
 * response or as a complete HTTP/1.1 message on a raw socket. Which form a request gets, and
 * the one log line, are the responder's business (src/http/respond.ts); the proxy transport
 * uses these directly only where it has no responder.
 */

/** The problem+json (RFC 9457) body of a gateway error. */
export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  [extra: string]: unknown;
}

/** The `type` URI of an error code. */
export function problemType(code: string): string {
  return `https://portcullis.dev/problems/${code.replace(/_/g, '-')}`;
}

/** Builds the problem+json body for `err` (extra members first, so they cannot shadow the fixed ones). */
export function problemBody(err: GatewayError): ProblemBody {
  return {
    ...(err.extra ?? {}),
    type: problemType(err.code),
    title: err.title,
    status: err.status,
    detail: err.message,
    code: err.code,
  };
}

/**
 * Writes `err` as an `application/problem+json` response (with `err.headers`, `Cache-Control:
 * no-store`). When the response has already started (headers sent) nothing sensible can be
 * appended, so the response is destroyed instead; a response already ended or destroyed is
 * left alone. HEAD requests get the headers without a body.
 */
export function writeProblem(res: ServerResponse, err: GatewayError): void {
  if (res.destroyed || res.writableEnded) return;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify(problemBody(err));
  res.statusCode = err.status;
  res.setHeader('Content-Type', 'application/problem+json');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  for (const [k, v] of Object.entries(err.headers ?? {})) res.setHeader(k, v);
  res.end(res.req?.method === 'HEAD' ? undefined : body);
}

/** Options of {@link writeProblemToSocket}. */
export interface SocketProblemOptions {
  /**
   * Send the problem+json body. @default true. False for a request that could not be parsed:
   * its method is unknown, and after a HEAD a body would be read as the next response.
   */
  body?: boolean;
}

/**
 * Writes `err` as a complete HTTP/1.1 response on a raw socket (refused or failed WebSocket
 * upgrades, CONNECT, requests Node's parser refused: there is no `ServerResponse`) and closes
 * the socket once it is flushed, with `setCookies` (e.g. a silent refresh's cookies). A socket
 * that is no longer writable is destroyed.
 */
export function writeProblemToSocket(socket: Duplex, err: GatewayError, setCookies: readonly string[] = [], opts: SocketProblemOptions = {}): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const body = opts.body === false ? '' : JSON.stringify(problemBody(err));
  const lines = [
    `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? 'Error'}`,
    ...(body ? ['Content-Type: application/problem+json'] : []),
    'Cache-Control: no-store',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...Object.entries(err.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
    ...setCookies.map((v) => `Set-Cookie: ${v}`),
  ];
  socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
  // end() only half-closes; make sure the descriptor is released even if the peer stalls.
  const timer = setTimeout(() => socket.destroy(), 5_000);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  socket.once('finish', () => socket.destroy());
}
