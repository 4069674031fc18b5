import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isMap, isScalar, isSeq, isPair, visit, type Document, type Node, Scalar } from 'yaml';
import { configSchema, type Config } from './schema.js';

/** One problem in a config file, located by line and key path. */
export interface ConfigProblem {
  file: string;
  line: number | undefined;
  path: string;
  message: string;
}

/** Thrown when a config file cannot be used; carries every problem found. */
export class ConfigError extends Error {
  readonly code = 'invalid_config';
  constructor(readonly problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.name = 'ConfigError';
  }
}

/** `file:line: key.path: message` — the form `config check` prints. */
export function formatProblem(p: ConfigProblem): string {
  const where = p.line === undefined ? p.file : `${p.file}:${p.line}`;
  return `${where}: ${p.path || '(top level)'}: ${p.message}`;
}

type Env = Record<string, string | undefined>;
const EXPR = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/** Replaces `${VAR}` and `${VAR:-default}`; returns undefined names in `missing`. */
export function interpolate(text: string, env: Env, missing: string[]): string {
  return text.replace(EXPR, (_m, name: string, def: string | undefined) => {
    const v = env[name];
    if (v !== undefined && v !== '') return v;
    if (def !== undefined) return def;
    if (v === '') return '';
    missing.push(name);
    return '';
  });
}

function pathString(path: readonly PropertyKey[]): string {
  let out = '';
  for (const k of path) out += typeof k === 'number' ? `[${k}]` : out ? `.${String(k)}` : String(k);
  return out;
}

/** Finds the line of the deepest node that exists along `path` (a missing key points at its parent). */
function lineOf(doc: Document, lc: LineCounter, path: readonly PropertyKey[], keyOf?: string): number | undefined {
  let node: unknown = doc.contents;
  let line: number | undefined = rangeLine(node, lc);
  for (const k of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(k));
      if (!pair) break;
      line = rangeLine(pair.key, lc) ?? line;
      node = pair.value;
    } else if (isSeq(node) && typeof k === 'number') {
      node = node.items[k];
      line = rangeLine(node, lc) ?? line;
    } else break;
  }
  if (keyOf !== undefined && isMap(node)) {
    const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === keyOf);
    if (pair) line = rangeLine(pair.key, lc) ?? line;
  }
  return line;
}

function rangeLine(node: unknown, lc: LineCounter): number | undefined {
  const range = (node as Node | undefined)?.range;
  return range ? lc.linePos(range[0]).line : undefined;
}

/**
 * Parses and validates config text. Returns a deep-frozen Config or throws ConfigError with
 * every problem (YAML syntax, missing environment variables, schema) located by line.
 */
/** A check beyond the schema (e.g. compiling route patterns); returns problems by key path. */
export type ConfigCheck = (cfg: Config) => { path: readonly PropertyKey[]; message: string }[];

export function parseConfig(text: string, file: string, env: Env = process.env, checks: readonly ConfigCheck[] = []): Config {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const problems: ConfigProblem[] = [];
  for (const e of doc.errors) {
    problems.push({ file, line: lc.linePos(e.pos[0]).line, path: '', message: `YAML: ${e.message.split('\n')[0]}` });
  }
  if (problems.length) throw new ConfigError(problems);

  // Interpolate scalar values in place, so line numbers survive.
  visit(doc, {
    Scalar(_key, node, path) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      const missing: string[] = [];
      const whole = /^\$\{[^}]*\}$/.test(node.value);
      let value: unknown = interpolate(node.value, env, missing);
      // A plain scalar that is one whole expression takes the YAML type of what it expands to
      // (`requests: ${LIMIT:-5}` is a number).
      if (whole && node.type === Scalar.PLAIN && typeof value === 'string' && value !== '') {
        const typed = parseDocument(value).toJS();
        if (typeof typed === 'number' || typeof typed === 'boolean') value = typed;
      }
      for (const name of missing) {
        const keys = path.filter(isPair).map((p) => (isScalar(p.key) ? String(p.key.value) : '?'));
        problems.push({
          file,
          line: rangeLine(node, lc),
          path: keys.join('.'),
          message: `environment variable ${name} is not set (use \${${name}:-default} for a default)`,
        });
      }
      node.value = value;
    },
  });

  const raw = doc.toJS() ?? {};
  // `public_url: ${PORTCULLIS_PUBLIC_URL:-}` with the variable unset means "not set" (derived
  // from listen in embedded mode, refused in production), not an invalid URL.
  if (typeof raw === 'object' && raw.public_url === '') delete raw.public_url;
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    for (const issue of result.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          problems.push({ file, line: lineOf(doc, lc, issue.path, key), path: pathString([...issue.path, key]), message: 'unknown key' });
        }
      } else {
        problems.push({ file, line: lineOf(doc, lc, issue.path), path: pathString(issue.path), message: issue.message });
      }
    }
  }
  if (problems.length || !result.success) {
    problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
    throw new ConfigError(problems);
  }
  const cfg = result.data;
  const scheme = cfg.tls ? 'https' : 'http';
  const host = cfg.listen.host === '0.0.0.0' || cfg.listen.host === '' ? '127.0.0.1' : cfg.listen.host;
  const hostPart = host.includes(':') ? `[${host}]` : host;
  const publicUrl = (cfg.public_url ?? `${scheme}://${hostPart}:${cfg.listen.port}`).replace(/\/+$/, '');
  const frozen = deepFreeze({ ...cfg, source: file, publicUrl, issuer: cfg.auth.issuer ?? publicUrl }) as Config;
  for (const check of checks) {
    for (const p of check(frozen)) problems.push({ file, line: lineOf(doc, lc, p.path), path: pathString(p.path), message: p.message });
  }
  if (problems.length) throw new ConfigError(problems);
  return frozen;
}

/** Reads, interpolates and validates a config file. */
export function loadConfig(file: string, env: Env = process.env, checks: readonly ConfigCheck[] = []): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const reason = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (e as Error).message;
    throw new ConfigError([{ file, line: undefined, path: '', message: `cannot read config: ${reason}` }]);
  }
  return parseConfig(text, file, env, checks);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

/**
 * Locates key paths in a config file (for warnings, which `loadConfig` does not raise): returns
 * one `ConfigProblem` per entry, with the line of the deepest existing node along each path.
 */
export function locateInFile(file: string, entries: readonly { path: readonly PropertyKey[]; message: string }[]): ConfigProblem[] {
  let doc: Document | undefined;
  const lc = new LineCounter();
  try {
    doc = parseDocument(readFileSync(file, 'utf8'), { lineCounter: lc, prettyErrors: false });
  } catch {
    doc = undefined;
  }
  return entries.map((e) => ({ file, line: doc ? lineOf(doc, lc, e.path) : undefined, path: pathString(e.path), message: e.message }));
}
