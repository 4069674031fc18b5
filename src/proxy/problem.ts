import type http from 'node:http';
import type { Duplex } from 'node:stream';
import type { GatewayError } from '../errors/index.js';

/** The problem+json (RFC 9457) body of a gateway error. */
export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  [extra: string]: unknown;
}

/** The `type` URI of an error code (the same form src/http/problem.ts uses). */
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
export function writeProblem(res: http.ServerResponse, err: GatewayError): void {
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

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/**
 * Writes `err` as a complete HTTP/1.1 problem+json response on a raw socket (for refused
 * or failed WebSocket upgrades, where there is no `ServerResponse`) and closes the socket
 * once it is flushed. Does nothing on a socket that is no longer writable.
 */
export function writeProblemToSocket(socket: Duplex, err: GatewayError, setCookies: readonly string[] = []): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify(problemBody(err));
  const lines = [
    `HTTP/1.1 ${err.status} ${REASONS[err.status] ?? 'Error'}`,
    'Content-Type: application/problem+json',
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
