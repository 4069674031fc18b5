import pino, { type Logger } from 'pino';
import { loadConfig } from '../../config/index.js';
import { configChecks } from '../../preflight.js';
import { openServices, type Services } from '../../services.js';
import type { Parsed } from '../args.js';
import { configPath, type Io } from '../io.js';

/**
 * Runs a command against the gateway's own services (the same stores, rules and revocation
 * path as a running gateway), opened for one command and closed after it.
 */
export async function withServices<T>(p: Parsed, io: Io, fn: (svc: Services) => Promise<T>): Promise<T> {
  const config = loadConfig(configPath(p, io), io.env, configChecks);
  const svc = await openServices({ config, env: io.env, logger: commandLogger(io), role: 'command' });
  try {
    return await fn(svc);
  } finally {
    await svc.close();
  }
}

/**
 * The logger the services get inside a one-shot command: warnings and errors only, each as
 * one `portcullis: …` line on stderr (a command's output is for people, not a log pipeline).
 */
export function commandLogger(io: Io): Logger {
  return pino(
    { level: 'warn', base: undefined, timestamp: false },
    {
      write(line: string) {
        try {
          const o = JSON.parse(line) as { msg?: string; err?: unknown };
          io.err(`portcullis: ${o.msg ?? ''}${typeof o.err === 'string' ? ` (${o.err})` : ''}\n`);
        } catch {
          io.err(line);
        }
      },
    },
  );
}
