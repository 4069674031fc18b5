import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isMap, isScalar, isSeq, isPair, visit, type Document, type Node, Scalar } from 'yaml';
import { type ConfigCheck, type ConfigDraft, type ConfigFinding, crossChecks, salvage } from './checks.js';
import { configSchema, type Config } from './schema.js';

/** One problem in a config file, located by line and key path. */
export interface ConfigProblem {
  file: string;
  line: number | undefined;
  path: string;
  message: string;
  /**
   * A problem of the environment rather than of the file (NODE_ENV=production without the
   * encryption key, an unparseable PORTCULLIS_SIGNING_KEYS): printed as `portcullis: message`.
   */
  environment?: boolean;
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
  if (p.environment) return `portcullis: ${p.message}`;
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
 * Where a `visit` callback's node sits: the keys of the pairs and the indexes in the sequences
 * on the way down (`['routes', 2, 'match', 'path']`).
 */
function nodePath(ancestors: readonly unknown[], node: unknown): PropertyKey[] {
  const out: PropertyKey[] = [];
  const chain = [...ancestors, node];
  for (let i = 0; i < chain.length; i++) {
    const a = chain[i];
    if (isPair(a)) out.push(isScalar(a.key) ? String(a.key.value) : '?');
    else if (isSeq(a)) {
      const idx = a.items.indexOf(chain[i + 1] as never);
      if (idx >= 0) out.push(idx);
    }
  }
  return out;
}

/** What {@link inspectConfig} found out about one config text. */
export interface ConfigInspection {
  readonly file: string;
  /** The file could not be read, or is not YAML: nothing else was checked. */
  readonly unreadable: boolean;
  /** The validated, deep-frozen config; undefined when any problem was found. */
  readonly config: Config | undefined;
  /** What parsed, key by key (the whole config when it is valid): what further checks look at. */
  readonly draft: ConfigDraft;
  /** Every problem, YAML, environment, schema, cross-key and `checks` alike, in file order. */
  readonly problems: readonly ConfigProblem[];
  /** Whether the file sets a value at `path` (after interpolation; `public_url: ""` sets none). */
  given(path: readonly PropertyKey[]): boolean;
  /** A finding of a further check, located in the file (the deepest existing node along its path). */
  locate(finding: ConfigFinding): ConfigProblem;
}

function byLine(a: ConfigProblem, b: ConfigProblem): number {
  return (a.line ?? 0) - (b.line ?? 0);
}

/**
 * Parses and validates config text in one pass and reports everything it finds: YAML syntax
 * (which stops it: nothing else can be read), unset environment variables, the schema (types,
 * unknown keys, values), the checks across keys, and `checks` (route patterns and others that
 * live outside this module). Later checks see the {@link ConfigDraft}, so a problem in one key
 * never hides one in another. Throws nothing for a bad config; see {@link parseConfig}.
 */
export function inspectConfig(text: string, file: string, env: Env = process.env, checks: readonly ConfigCheck[] = []): ConfigInspection {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const problems: ConfigProblem[] = [];
  let raw: unknown;
  const locate = (f: ConfigFinding): ConfigProblem => ({ file, line: lineOf(doc, lc, f.path), path: pathString(f.path), message: f.message });
  const given = (path: readonly PropertyKey[]): boolean => {
    let v: unknown = raw;
    for (const k of path) {
      if (typeof v !== 'object' || v === null) return false;
      v = (v as Record<PropertyKey, unknown>)[k];
    }
    return v !== undefined && v !== null && v !== '';
  };
  const result = (draft: ConfigDraft, config?: Config, unreadable = false): ConfigInspection => ({
    file,
    unreadable,
    config,
    draft,
    problems: problems.sort(byLine),
    given,
    locate,
  });

  for (const e of doc.errors) {
    problems.push({ file, line: lc.linePos(e.pos[0]).line, path: '', message: `YAML: ${e.message.split('\n')[0]}` });
  }
  if (problems.length) return result({}, undefined, true);

  // Interpolate scalar values in place, so line numbers survive.
  const unset = new Set<string>();
  visit(doc, {
    Scalar(_key, node, ancestors) {
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
      if (missing.length) {
        const path = pathString(nodePath(ancestors, node));
        unset.add(path);
        for (const name of missing) {
          problems.push({
            file,
            line: rangeLine(node, lc),
            path,
            message: `environment variable ${name} is not set (use \${${name}:-default} for a default)`,
          });
        }
      }
      node.value = value;
    },
  });

  raw = doc.toJS() ?? {};
  // `public_url: ${PORTCULLIS_PUBLIC_URL:-}` with the variable unset means "not set" (derived
  // from listen in embedded mode, refused in production), not an invalid URL.
  if (typeof raw === 'object' && raw !== null && (raw as { public_url?: unknown }).public_url === '') delete (raw as { public_url?: unknown }).public_url;
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          problems.push({ file, line: lineOf(doc, lc, issue.path, key), path: pathString([...issue.path, key]), message: 'unknown key' });
        }
      } else if (!unset.has(pathString(issue.path))) {
        // (An unset variable's empty value is not reported a second time as a bad value.)
        problems.push({ file, line: lineOf(doc, lc, issue.path), path: pathString(issue.path), message: issue.message });
      }
    }
  }
  const draft = (parsed.success ? parsed.data : (salvage(configSchema, raw) ?? {})) as ConfigDraft;
  // (An unset variable's empty value is not reported again by the checks either.)
  const findings = [...crossChecks(draft, given), ...checks.flatMap((check) => check(draft))];
  for (const f of findings) if (!unset.has(pathString(f.path))) problems.push(locate(f));
  if (problems.length || !parsed.success) return result(draft);

  const cfg = parsed.data;
  const scheme = cfg.tls ? 'https' : 'http';
  const host = cfg.listen.host === '0.0.0.0' || cfg.listen.host === '' ? '127.0.0.1' : cfg.listen.host;
  const hostPart = host.includes(':') ? `[${host}]` : host;
  const publicUrl = (cfg.public_url ?? `${scheme}://${hostPart}:${cfg.listen.port}`).replace(/\/+$/, '');
  const frozen = deepFreeze({ ...cfg, source: file, publicUrl, issuer: cfg.auth.issuer ?? publicUrl }) as Config;
  return result(frozen, frozen);
}

/** {@link inspectConfig} of a file; an unreadable file is one problem. */
export function inspectConfigFile(file: string, env: Env = process.env, checks: readonly ConfigCheck[] = []): ConfigInspection {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const reason = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (e as Error).message;
    return inspectConfigUnreadable(file, `cannot read config: ${reason}`);
  }
  return inspectConfig(text, file, env, checks);
}

function inspectConfigUnreadable(file: string, message: string): ConfigInspection {
  const problems: ConfigProblem[] = [{ file, line: undefined, path: '', message }];
  return {
    file,
    unreadable: true,
    config: undefined,
    draft: {},
    problems,
    given: () => false,
    locate: (f) => ({ file, line: undefined, path: pathString(f.path), message: f.message }),
  };
}

/**
 * Parses and validates config text. Returns a deep-frozen Config or throws ConfigError with
 * every problem (YAML syntax, missing environment variables, schema, cross-key checks and
 * `checks`) located by line.
 */
export function parseConfig(text: string, file: string, env: Env = process.env, checks: readonly ConfigCheck[] = []): Config {
  return orThrow(inspectConfig(text, file, env, checks));
}

/** Reads, interpolates and validates a config file (see {@link parseConfig}). */
export function loadConfig(file: string, env: Env = process.env, checks: readonly ConfigCheck[] = []): Config {
  return orThrow(inspectConfigFile(file, env, checks));
}

function orThrow(i: ConfigInspection): Config {
  if (i.config === undefined || i.problems.length) throw new ConfigError([...i.problems]);
  return i.config;
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
