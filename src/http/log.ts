import { pino, type Logger } from 'pino';

export type { Logger };

/** Keys whose values never reach a log line. */
const REDACT = [
  'password',
  'current_password',
  'new_password',
  'token',
  'access_token',
  'refresh_token',
  'mfa_token',
  'code',
  'authorization',
  'cookie',
  'set-cookie',
  '*.password',
  '*.current_password',
  '*.new_password',
  '*.token',
  '*.access_token',
  '*.refresh_token',
  '*.mfa_token',
  '*.authorization',
  '*.cookie',
  '*["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  'req.headers.authorization',
  'req.headers.cookie',
];

/**
 * JSON-lines logger on stdout (or the given stream). Security events carry an `event` field;
 * secrets are redacted by key wherever they appear one or two levels deep.
 *
 * One line skips the redaction pass: the access line (`event: "request"`, one per request),
 * written by a child of this logger made once with `redact: []` (src/pipeline/handler.ts). Its
 * fields are fixed and none can hold a secret (ids, the path without query or `;` parameters,
 * config names, status, timing, user name, address; never a header, body or query), and with
 * pino 10 the redaction pass is about three quarters of a line's cost.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  // ISO 8601 time, formatted once per millisecond: `toISOString()` is a good part of a line's
  // cost, and under load many lines (one access line per request) share a millisecond.
  let lastMs = -1;
  let lastTime = '';
  const isoTime = (): string => {
    const ms = Date.now();
    if (ms !== lastMs) {
      lastMs = ms;
      lastTime = `,"time":"${new Date(ms).toISOString()}"`;
    }
    return lastTime;
  };
  return pino(
    {
      level,
      base: { service: 'portcullis' },
      timestamp: isoTime,
      redact: { paths: REDACT, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    // Lines are written in batches: once 4 KB are waiting, and at least every 100 ms (pino
    // flushes the rest at exit). With a line per request (the access line) a write per line,
    // handed to the thread pool, cost about a quarter of a proxied request's CPU under
    // `npm run bench`, and synchronous writes most of that too; batched, a few per cent.
    destination ?? pino.destination({ fd: 1, sync: false, minLength: 4096, periodicFlush: 100 }),
  );
}
