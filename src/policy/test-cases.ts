import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node, type Pair, type YAMLMap } from 'yaml';
import type { PolicyContext, PolicyDecision } from './decide.js';
import { explain, type ExplainVerdict } from './explain.js';

/**
 * `portcullis policy test`: YAML files of cases (SPEC §2), each a request, a caller and the
 * decision expected, run through {@link explain} — the same path as `policy explain`, which is
 * the gateway's own decision function. Pure: the caller reads the files and prints the results.
 */

/** The words a case may expect: SPEC §2's, plus `auth_api` (the gateway's own auth API answers). */
export const EXPECT_WORDS = ['allow', 'unauthenticated', 'forbidden', 'mfa_required', 'deny', 'no_route', 'bad_request', 'auth_api'] as const;
export type ExpectWord = (typeof EXPECT_WORDS)[number];

/** One case of a test file, validated. */
export interface PolicyTestCase {
  readonly file: string;
  /** 1-based line of the case (its first key). */
  readonly line: number;
  /** 0-based position in the file's list. */
  readonly index: number;
  readonly name: string;
  readonly request: { readonly method: string; readonly url: string; readonly host?: string };
  /** `anonymous`, or a signed-in user with these roles (and a second factor when `mfa`). */
  readonly as: 'anonymous' | { readonly roles: readonly string[]; readonly mfa: boolean };
  readonly expect: ExpectWord;
  /** The route that must decide, when given. */
  readonly route?: string;
}

/** A malformed test file, located like a config problem: `file:line: [index].key: message`. */
export interface TestFileProblem {
  readonly file: string;
  readonly line: number | undefined;
  readonly path: string;
  readonly message: string;
}

/** `file:line: [index].key: message` (`file:line: message` for the file as a whole). */
export function formatTestFileProblem(p: TestFileProblem): string {
  return `${p.line === undefined ? p.file : `${p.file}:${p.line}`}: ${p.path ? `${p.path}: ` : ''}${p.message}`;
}

const CASE_KEYS = ['name', 'request', 'as', 'expect', 'route'];
const REQUEST_KEYS = ['method', 'url', 'host'];
const AS_KEYS = ['roles', 'mfa'];
const METHOD = /^[A-Za-z][A-Za-z-]{0,31}$/;

/**
 * Parses and validates one test file. Every problem is reported (not only the first), each with
 * its line: the key's own line, or the case's line for a missing key.
 */
export function parsePolicyTests(text: string, file: string): { cases: PolicyTestCase[]; problems: TestFileProblem[] } {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const problems: TestFileProblem[] = [];
  const lineOf = (node: unknown): number | undefined => {
    const range = (node as Node | undefined)?.range;
    return range ? lc.linePos(range[0]).line : undefined;
  };
  const problem = (node: unknown, path: string, message: string) => problems.push({ file, line: lineOf(node), path, message });
  for (const e of doc.errors) problems.push({ file, line: lc.linePos(e.pos[0]).line, path: '', message: `YAML: ${e.message.split('\n')[0]}` });
  if (problems.length) return { cases: [], problems };

  const root = doc.contents;
  if (!isSeq(root)) {
    problems.push({
      file,
      line: lineOf(root) ?? 1,
      path: '',
      message:
        root === null || (isScalar(root) && root.value === null)
          ? 'the file holds no test cases (expected a list: - name: …)'
          : 'expected a list of test cases (- name: …, request: …, as: …, expect: …)',
    });
    return { cases: [], problems };
  }
  if (root.items.length === 0) problem(root, '', 'the file holds no test cases (expected a list: - name: …)');

  const cases: PolicyTestCase[] = [];
  root.items.forEach((item, index) => {
    const at = `[${index}]`;
    const before = problems.length;
    if (!isMap(item)) {
      problem(item, at, 'expected a case: a map with name, request, as and expect');
      return;
    }
    const pairs = keyed(item, at, CASE_KEYS, problem);
    const name = text1(pairs.get('name'), item, `${at}.name`, problem, { required: true });
    const req = pairs.get('request');
    let request: PolicyTestCase['request'] | undefined;
    if (req === undefined) problem(item, `${at}.request`, 'required: { method, url, host? }');
    else if (!isMap(req.value)) problem(req.value ?? req.key, `${at}.request`, 'expected a map: { method, url, host? }');
    else {
      const rp = keyed(req.value, `${at}.request`, REQUEST_KEYS, problem);
      const method = text1(rp.get('method'), req.value, `${at}.request.method`, problem, { required: false });
      const url = text1(rp.get('url'), req.value, `${at}.request.url`, problem, { required: true });
      const host = text1(rp.get('host'), req.value, `${at}.request.host`, problem, { required: false });
      if (method !== undefined && !METHOD.test(method)) problem(rp.get('method')?.value, `${at}.request.method`, `"${method}" is not an HTTP method`);
      if (url !== undefined && !url.startsWith('/') && url !== '*' && !/^https?:\/\//i.test(url)) {
        problem(rp.get('url')?.value, `${at}.request.url`, 'give a path starting with "/" or an http(s):// URL');
      }
      if (host !== undefined && /[\s/]/.test(host)) problem(rp.get('host')?.value, `${at}.request.host`, 'a Host header value: host or host:port');
      if (url !== undefined) request = { method: (method ?? 'GET').toUpperCase(), url, ...(host === undefined ? {} : { host }) };
    }
    const asPair = pairs.get('as');
    let as: PolicyTestCase['as'] | undefined;
    if (asPair === undefined) problem(item, `${at}.as`, 'required: anonymous, or { roles: [...], mfa: true|false }');
    else if (isScalar(asPair.value) && asPair.value.value === 'anonymous') as = 'anonymous';
    else if (!isMap(asPair.value)) problem(asPair.value ?? asPair.key, `${at}.as`, 'expected anonymous, or { roles: [...], mfa: true|false }');
    else {
      const ap = keyed(asPair.value, `${at}.as`, AS_KEYS, problem);
      const rolesPair = ap.get('roles');
      const roles: string[] = [];
      if (rolesPair !== undefined) {
        if (!isSeq(rolesPair.value)) problem(rolesPair.value ?? rolesPair.key, `${at}.as.roles`, 'expected a list of role names');
        else
          rolesPair.value.items.forEach((r, i) => {
            if (isScalar(r) && typeof r.value === 'string' && r.value !== '') roles.push(r.value);
            else problem(r, `${at}.as.roles[${i}]`, 'expected a role name');
          });
      }
      const mfaPair = ap.get('mfa');
      let mfa = false;
      if (mfaPair !== undefined) {
        if (isScalar(mfaPair.value) && typeof mfaPair.value.value === 'boolean') mfa = mfaPair.value.value;
        else problem(mfaPair.value ?? mfaPair.key, `${at}.as.mfa`, 'expected true or false');
      }
      as = { roles, mfa };
    }
    const expectPair = pairs.get('expect');
    const word = text1(expectPair, item, `${at}.expect`, problem, { required: true });
    if (word !== undefined && !(EXPECT_WORDS as readonly string[]).includes(word)) {
      problem(expectPair?.value, `${at}.expect`, `"${word}" is not a decision: use one of ${EXPECT_WORDS.join(' | ')}`);
    }
    const route = text1(pairs.get('route'), item, `${at}.route`, problem, { required: false });
    if (problems.length === before && name !== undefined && request !== undefined && as !== undefined && word !== undefined) {
      cases.push({ file, line: lineOf(item) ?? 1, index, name, request, as, expect: word as ExpectWord, ...(route === undefined ? {} : { route }) });
    }
  });
  // In file order (a case's checks run key by key; a missing key points at the case's line).
  problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  return { cases, problems };
}

type ProblemSink = (node: unknown, path: string, message: string) => void;

/** The pairs of a map by key, reporting keys that are not allowed there. */
function keyed(map: YAMLMap, at: string, allowed: readonly string[], problem: ProblemSink): Map<string, Pair> {
  const out = new Map<string, Pair>();
  for (const pair of map.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : undefined;
    if (key === undefined || !allowed.includes(key)) {
      problem(pair.key, `${at}.${key ?? '?'}`, `unknown key (expected ${allowed.join(', ')})`);
      continue;
    }
    out.set(key, pair as Pair);
  }
  return out;
}

/** A non-empty string value; reports a missing (when required) or non-string one. */
function text1(pair: Pair | undefined, parent: unknown, path: string, problem: ProblemSink, opts: { required: boolean }): string | undefined {
  if (pair === undefined) {
    if (opts.required) problem(parent, path, 'required');
    return undefined;
  }
  const v = pair.value;
  if (isScalar(v) && (typeof v.value === 'string' || typeof v.value === 'number') && String(v.value).trim() !== '') return String(v.value);
  problem(v ?? pair.key, path, 'expected a non-empty string');
  return undefined;
}

/** What the gateway decided for one case. */
export interface PolicyTestOutcome {
  readonly decision: PolicyDecision;
  readonly route: string | null;
  readonly status: number;
  readonly code: string | null;
  readonly reason: string;
}

/** One case, run. */
export interface PolicyTestResult {
  readonly case: PolicyTestCase;
  readonly passed: boolean;
  readonly actual: PolicyTestOutcome;
  /** Why it failed, in one line (decision, route, or an unknown route name). */
  readonly failure?: string;
}

/**
 * Runs cases against one configuration, through {@link explain}: the same normalization,
 * matching and decision as the gateway and `policy explain` (a signed-in caller holds a bearer
 * token with its roles, and amr `["pwd","otp"]` with `mfa: true`).
 */
export function runPolicyTests(ctx: PolicyContext, cases: readonly PolicyTestCase[]): PolicyTestResult[] {
  const names = new Set(ctx.table.routes.map((r) => r.name));
  return cases.map((c) => {
    const signedIn = c.as !== 'anonymous';
    const r = explain(ctx, {
      method: c.request.method,
      url: c.request.url,
      ...(c.request.host === undefined ? {} : { host: c.request.host }),
      roles: c.as === 'anonymous' ? [] : c.as.roles,
      mfa: c.as !== 'anonymous' && c.as.mfa,
    });
    const v: ExplainVerdict = signedIn ? r.identity.verdict : r.anonymous;
    const actual: PolicyTestOutcome = { decision: v.outcome, route: r.route?.name ?? null, status: v.status, code: v.code, reason: v.reason };
    const wrong: string[] = [];
    if (actual.decision !== c.expect) wrong.push('wrong decision');
    if (c.route !== undefined && c.route !== actual.route)
      wrong.push(names.has(c.route) ? 'wrong route' : `wrong route: the config has no route named "${c.route}"`);
    return wrong.length === 0 ? { case: c, passed: true, actual } : { case: c, passed: false, actual, failure: wrong.join('; ') };
  });
}

/** A failed case as printed: `file:line: FAIL name`, then expected and actual. */
export function formatFailure(r: PolicyTestResult): string {
  const c = r.case;
  const a = r.actual;
  const by = (route: string | null | undefined) => (route === undefined ? '' : route === null ? ' (no route)' : ` by route "${route}"`);
  const status = a.decision === 'allow' ? 'forwarded' : `${a.status}${a.code ? ` ${a.code}` : ''}`;
  const who = c.as === 'anonymous' ? 'anonymous' : `roles [${c.as.roles.join(', ')}]${c.as.mfa ? ' with mfa' : ''}`;
  const req = `${c.request.method} ${c.request.url}${c.request.host === undefined ? '' : ` (host ${c.request.host})`}`;
  return [
    `${c.file}:${c.line}: FAIL ${c.name} (${r.failure})`,
    `    request:  ${req} as ${who}`,
    `    expected: ${c.expect}${by(c.route)}`,
    `    actual:   ${a.decision}${by(a.route)} (${status}): ${a.reason}`,
  ].join('\n');
}

/** `12 passed, 1 failed (2 files)`. */
export function summaryLine(results: readonly PolicyTestResult[], files: number): string {
  const failed = results.filter((r) => !r.passed).length;
  return `${results.length - failed} passed, ${failed} failed (${files} file${files === 1 ? '' : 's'})`;
}
