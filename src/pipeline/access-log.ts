import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

/**
 * The request's own record: its id (`X-Request-Id`) and what the stages learned about it (route,
 * upstream, user, normalized path), from which the access line is written when it ends. One
 * small object per request, hung on the request under a symbol so the responder (which logs
 * error answers) reads the same id and path: one grep for the id finds every line of a request.
 */

/** The response and upstream request header carrying the request id. */
export const REQUEST_ID_HEADER = 'x-request-id';

/** Longest request id accepted from a `trust_proxy` peer. */
const MAX_REQUEST_ID = 128;
/** What an accepted request id may contain: no spaces, quotes, commas or controls (log- and header-safe). */
const REQUEST_ID_CHARS = /^[A-Za-z0-9._:+/=-]+$/;

/**
 * True when `value` (an `X-Request-Id` from a trusted peer) can be used as this request's id:
 * 1 to 128 characters of letters, digits and `. _ : + / = -`. Several copies (which Node joins
 * with ", ") are refused too.
 */
export function validRequestId(value: string): boolean {
  return value.length > 0 && value.length <= MAX_REQUEST_ID && REQUEST_ID_CHARS.test(value);
}

/** A fresh request id (a random UUID: cheap, and what most tools expect to see). */
export function newRequestId(): string {
  return randomUUID();
}

const RECORD = Symbol('portcullis.request');

/** What the pipeline knows about one request, for its access line and the responder's. */
export class RequestRecord {
  /** The metrics label of the route: its config name, or `_auth`, `_none`, `_invalid`. */
  label = '_invalid';
  /** The route (config name) that matched, or null. */
  route: string | null = null;
  /** The normalized path, once the normalize stage has made it. */
  path: string | undefined = undefined;
  /** The upstream the request was forwarded (or tunnelled) to, or null. */
  upstream: string | null = null;
  /** The authenticated user's name, or null. */
  user: string | null = null;
  /** The status line sent on an upgrade's raw socket (see {@link watchSocketStatus}). */
  socketStatus: number | null = null;

  constructor(
    /** The request id: a `trust_proxy` peer's valid `X-Request-Id`, else a new one. */
    readonly id: string,
    /** `process.hrtime.bigint()` when the pipeline took the request. */
    readonly started: bigint,
  ) {}
}

/** Hangs `rec` on `req` (see {@link recordOf}). */
export function attachRecord(req: IncomingMessage, rec: RequestRecord): void {
  (req as unknown as Record<symbol, RequestRecord>)[RECORD] = rec;
}

/** The record the pipeline hung on `req`; undefined for a request it never saw (CONNECT, say). */
export function recordOf(req: IncomingMessage | undefined): RequestRecord | undefined {
  return req ? (req as unknown as Record<symbol, RequestRecord | undefined>)[RECORD] : undefined;
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

/**
 * The path a log line shows for `req`: the normalized path once the pipeline has one (what routes
 * matched and the upstream received), else the request target as sent; either way through
 * {@link loggablePath}.
 */
export function loggedPathOf(req: IncomingMessage, rec: RequestRecord | undefined): string {
  // express keeps the path the gateway handed it in originalUrl while its routers rewrite url.
  return loggablePath(rec?.path ?? (req as { originalUrl?: string }).originalUrl ?? req.url ?? '');
}

/** The fields of one access line (`event: "request"`), in a fixed order. */
export interface AccessLine {
  event: 'request';
  request_id: string;
  method: string | null;
  path: string | null;
  route: string | null;
  /** The status sent; null when no answer was sent (the client left first, or the request was dropped). */
  status: number | null;
  /** From the moment the pipeline took the request until its response (or connection) closed; null when unknown. */
  duration_ms: number | null;
  upstream: string | null;
  user: string | null;
  ip: string | null;
  /** Set (true) when the response did not complete: cut mid-body, or never sent. */
  aborted?: true;
  /** Set (true) on a WebSocket upgrade's line, written when its connection closes. */
  websocket?: true;
}

/** Milliseconds since `started` (an hrtime), to the microsecond. */
export function elapsedMs(started: bigint): number {
  return Math.round(Number(process.hrtime.bigint() - started) / 1000) / 1000;
}

/**
 * Records on `rec` the status line of the first bytes written to an upgrade's raw socket. Every
 * answer on that socket starts with one, whoever writes it (the responder's refusal, the proxy's
 * 502/504, the upstream's relayed refusal or its 101), so the tunnel's access line gets the
 * status the client actually saw. Only upgrades use this; the socket's own `write`/`end` are
 * back in place after the first call.
 */
export function watchSocketStatus(socket: Duplex, rec: RequestRecord): void {
  const s = socket as unknown as { write: (...a: unknown[]) => boolean; end: (...a: unknown[]) => unknown };
  const write = s.write;
  const end = s.end;
  const peek = (chunk: unknown): void => {
    s.write = write;
    s.end = end;
    let head = '';
    if (typeof chunk === 'string') head = chunk.slice(0, 12);
    else if (chunk instanceof Uint8Array) head = Buffer.from(chunk.buffer, chunk.byteOffset, Math.min(chunk.byteLength, 12)).toString('latin1');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
    if (m) rec.socketStatus = Number(m[1]);
  };
  s.write = function (this: unknown, ...args: unknown[]) {
    peek(args[0]);
    return Reflect.apply(write, this, args) as boolean;
  };
  s.end = function (this: unknown, ...args: unknown[]) {
    if (typeof args[0] !== 'function') peek(args[0]);
    else {
      s.write = write;
      s.end = end;
    }
    return Reflect.apply(end, this, args);
  };
}
