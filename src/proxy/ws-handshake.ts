import { createHash } from 'node:crypto';
import type http from 'node:http';

/** The GUID every `Sec-WebSocket-Accept` is derived with (RFC 6455 §1.3, §4.2.2). */
export const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** A `Sec-WebSocket-Key`: 16 bytes, base64 (always 22 characters and `==`). */
const KEY = /^[A-Za-z0-9+/]{22}==$/;

/** base64(SHA-1(key + GUID)): the `Sec-WebSocket-Accept` an upstream must answer `key` with. */
export function websocketAccept(key: string): string {
  return createHash('sha1')
    .update(key + WEBSOCKET_GUID)
    .digest('base64');
}

/**
 * The client's `Sec-WebSocket-Key` when there is exactly one and it is 16 bytes of base64;
 * null otherwise (missing, repeated — Node joins repeats with ", " — or malformed).
 */
export function websocketKey(req: http.IncomingMessage): string | null {
  const v = req.headers['sec-websocket-key'];
  if (typeof v !== 'string') return null;
  const key = v.trim();
  return KEY.test(key) ? key : null;
}

/** Whether an upstream's handshake answer carries exactly the `Sec-WebSocket-Accept` for `key`. */
export function acceptMatches(res: http.IncomingMessage, key: string): boolean {
  const v = res.headers['sec-websocket-accept'];
  return typeof v === 'string' && v.trim() === websocketAccept(key);
}
