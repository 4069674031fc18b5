import type { Parsed } from './args.js';
import { UsageError, opt } from './args.js';

/** Where the CLI writes; tests pass their own. */
export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  stdin: () => Promise<string>;
  env: NodeJS.ProcessEnv;
}

export const defaultIo = (): Io => ({
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  stdin: readStdin,
  env: process.env,
});

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) throw new UsageError('--password-stdin reads the password from standard input; pipe it in');
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The config file: --config, else PORTCULLIS_CONFIG, else config/gateway.yaml. */
export const configPath = (p: Parsed, io: Io): string => opt(p, 'config') ?? io.env.PORTCULLIS_CONFIG ?? 'config/gateway.yaml';
