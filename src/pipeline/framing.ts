import type { IncomingMessage } from 'node:http';
import { GatewayError, Errors } from '../errors/index.js';

/**
 * Stage "framing" (SPEC §3.1): refuse every request whose head the gateway could not forward
 * faithfully. It runs before anything else looks at the request, on plain requests and upgrades.
 *
 * The listener is created with `maxHeadersCount: 0`, so Node keeps every header line (its default
 * keeps the first 1000 and drops the rest silently, while llhttp still frames the body by a
 * `Transfer-Encoding` or `Content-Length` among the dropped ones — the smuggling this stage
 * closes). The total size stays bounded by `maxHeaderSize`.
 *
 * Refused (the connection is closed after the answer): more than `maxHeaderLines` header lines
 * (431); a `Content-Length` that is repeated or not plain digits, a `Transfer-Encoding` that is
 * repeated, is anything but `chunked`, comes with a `Content-Length`, or is sent by an HTTP/1.0
 * client (400 `bad_framing`, RFC 9112 §6.1–6.3); a missing or repeated `Host` (400 `bad_host`);
 * a repeated `Authorization` (400 `bad_request`).
 * @returns the refusal, or null when the request may go on
 */
export function checkFraming(req: IncomingMessage, maxHeaderLines: number): GatewayError | null {
  const raw = req.rawHeaders;
  if (raw.length > maxHeaderLines * 2) {
    return new GatewayError(Errors.too_many_headers, `The request has ${raw.length / 2} header lines; at most ${maxHeaderLines} are accepted.`);
  }
  let host = 0;
  let auth = 0;
  let cl = 0;
  let te = 0;
  let clValue = '';
  let teValue = '';
  // One pass over the raw list, which holds every copy of every header as sent.
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i];
    const len = n.length;
    if (len === 4 && n.toLowerCase() === 'host') host++;
    else if (len === 13 && n.toLowerCase() === 'authorization') auth++;
    else if (len === 14 && n.toLowerCase() === 'content-length') {
      cl++;
      clValue = raw[i + 1];
    } else if (len === 17 && n.toLowerCase() === 'transfer-encoding') {
      te++;
      teValue = raw[i + 1];
    }
  }
  if (host > 1) return new GatewayError(Errors.bad_host, 'The request has more than one Host header.');
  // Two sets of credentials: which one counts would depend on who reads them.
  if (auth > 1) return new GatewayError(Errors.bad_request, 'The request has more than one Authorization header.');
  // HTTP/1.1 without Host is refused by Node already; an HTTP/1.0 request without one would skip
  // every host rule and reach the upstream's default virtual host.
  if (host === 0) return new GatewayError(Errors.bad_host, 'A Host header is required.');
  if (te > 0) {
    if (te > 1 || cl > 0 || teValue.trim().toLowerCase() !== 'chunked') {
      return new GatewayError(Errors.bad_framing, 'Transfer-Encoding must be exactly "chunked", once, without Content-Length.');
    }
    if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0) {
      return new GatewayError(Errors.bad_framing, 'An HTTP/1.0 request cannot use Transfer-Encoding.');
    }
  }
  if (cl > 1 || (cl === 1 && !/^\d{1,15}$/.test(clValue.trim()))) {
    return new GatewayError(Errors.bad_framing, 'Content-Length must appear once, as a plain decimal number.');
  }
  return null;
}
