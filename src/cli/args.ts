/** Thrown for bad usage: the CLI prints the message and exits 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** Parsed command line: positionals plus `--flag value` / `--flag` options (repeatable). */
export interface Parsed {
  positionals: string[];
  options: Map<string, string[]>;
}

/**
 * Parses argv against the flags a command knows. `valued` flags take the next argument (or
 * `--flag=value`); `boolean` flags take none. Unknown flags are usage errors.
 */
export function parseArgs(argv: readonly string[], spec: { valued?: readonly string[]; boolean?: readonly string[] }): Parsed {
  const valued = new Set(spec.valued ?? []);
  const bools = new Set([...(spec.boolean ?? []), 'debug']);
  const positionals: string[] = [];
  const options = new Map<string, string[]>();
  const add = (k: string, v: string) => options.set(k, [...(options.get(k) ?? []), v]);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('--')) {
      positionals.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq === -1 ? undefined : eq);
    if (valued.has(name)) {
      const v = eq === -1 ? argv[++i] : a.slice(eq + 1);
      if (v === undefined) throw new UsageError(`--${name} needs a value`);
      add(name, v);
    } else if (bools.has(name)) {
      if (eq !== -1) throw new UsageError(`--${name} takes no value`);
      add(name, 'true');
    } else {
      throw new UsageError(`unknown option --${name}`);
    }
  }
  return { positionals, options };
}

export const opt = (p: Parsed, name: string): string | undefined => p.options.get(name)?.at(-1);
export const flag = (p: Parsed, name: string): boolean => p.options.has(name);
