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
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'portcullis' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
