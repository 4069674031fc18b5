import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileRoutes, evaluateRequest, explain, policyContext, type PolicyContext } from '../src/policy/index.js';
import { addUser, login, rawRequest, startHarness, type Harness } from './support/helpers.js';

/**
 * One decision, three callers (SPEC §3.1 "one decision function"): every request of one table
 * goes through the live gateway (raw bytes on a socket), through `evaluateRequest` (what the
 * gateway's handler calls) and through `explain` (what `portcullis policy explain` prints), and
 * the three must agree on the status and the problem code. Before the pipeline was reshaped,
 * `/nowhere;x` was 400 at the gateway and 404 in `explain`.
 */

const ROUTES = `
routes:
  - name: admin
    match: { path: /admin/** }
    upstream: echo
    access: { roles: [admin] }
  - name: secure
    match: { path: /secure/** }
    upstream: echo
    access: { roles: [admin] }
    mfa: true
  - name: closed
    match: { path: /internal/** }
    access: deny
  - name: public
    match: { path: /public/** }
    upstream: echo
    access: public
  - name: read-only
    match: { path: /docs/**, methods: [GET] }
    upstream: echo
    access: authenticated
  - name: docs-write
    match: { path: /docs/** }
    upstream: echo
    access: { roles: [editor] }
  - name: semis
    match: { path: /matrix/** }
    upstream: echo
    access: authenticated
    allow_semicolons: true
  - name: exact
    match: { path: /Exact/Case, case_sensitive: true }
    upstream: echo
    access: public
  - name: reports
    match: { host: reports.example.com, path: /** }
    upstream: echo
    access: { roles: [reporter] }
  - name: app
    match: { path: /app/** }
    upstream: echo
    access: authenticated
`;

type Who = 'anon' | 'staff' | 'admin';
const ROLES: Record<Who, string[]> = { anon: [], staff: ['staff'], admin: ['admin'] };

/** [method, target, host (undefined: the gateway's own)] */
const TABLE: [string, string, string | undefined][] = [
  ['GET', '/public/a', undefined],
  ['GET', '/PUBLIC/a', undefined],
  ['GET', '/admin/x', undefined],
  ['GET', '/ADMIN/x', undefined],
  ['GET', '/admin./x', undefined],
  ['GET', '/admin%20/x', undefined],
  ['GET', '/admin;x/y', undefined],
  ['GET', '/admin%3Bx/y', undefined],
  ['DELETE', '/admin/x', undefined],
  ['GET', '/secure/x', undefined],
  ['GET', '/internal/x', undefined],
  ['GET', '/Internal./x', undefined],
  ['GET', '/nowhere', undefined],
  ['GET', '/nowhere;x', undefined],
  ['GET', '/nowhere%3bx', undefined],
  ['GET', '/docs/a', undefined],
  ['DELETE', '/docs/a', undefined],
  ['GET', '/matrix;v=1/a', undefined],
  ['GET', '/matrix/a;b', undefined],
  ['GET', '/Exact/Case', undefined],
  ['GET', '/exact/case', undefined],
  ['GET', '/app/../admin/x', undefined],
  ['GET', '/app/%2e%2e/admin', undefined],
  ['GET', '/app/%252e', undefined],
  ['GET', '/app/...', undefined],
  ['GET', '/app/x/', undefined],
  ['GET', '/x', 'reports.example.com'],
  ['GET', '/x', 'REPORTS.example.com.'],
  ['GET', '/x', 'reports.example.com..'],
  ['GET', '/x', '[reports.example.com]'],
  ['TRACE', '/public/a', undefined],
  ['PROPFIND', '/app/a', undefined],
];

let h: Harness;
let ctx: PolicyContext;
const tokens: Partial<Record<Who, string>> = {};

beforeAll(async () => {
  h = await startHarness({ routes: ROUTES });
  await addUser(h, 'alice', ['staff']);
  await addUser(h, 'root', ['admin']);
  tokens.staff = await login(h, 'alice');
  tokens.admin = await login(h, 'root');
  ctx = policyContext(compileRoutes(h.app.config.routes), h.app.config, new URL(h.url).origin);
});

afterAll(async () => {
  await h?.close();
});

async function live(method: string, target: string, host: string, who: Who): Promise<{ status: number; code: string | null }> {
  const auth = tokens[who as 'staff' | 'admin'] ? `Authorization: Bearer ${tokens[who as 'staff' | 'admin']}\r\n` : '';
  const r = await rawRequest(h.url, `${method} ${target} HTTP/1.1\r\nHost: ${host}\r\n${auth}Connection: close\r\n\r\n`);
  if (/^application\/problem\+json/.test(r.headers['content-type'] ?? '')) return { status: r.status, code: (JSON.parse(r.body) as { code: string }).code };
  // Anything else came from the echo upstream: the request was forwarded.
  expect(r.headers['content-type'] ?? '', `${method} ${target} as ${who}: neither a problem nor the upstream`).toMatch(/^application\/json/);
  return { status: 200, code: null };
}

describe('the gateway, evaluateRequest and policy explain decide alike', () => {
  for (const [method, target, hostOverride] of TABLE) {
    for (const who of ['anon', 'staff', 'admin'] as Who[]) {
      it(`${method} ${target}${hostOverride ? ` (Host ${hostOverride})` : ''} as ${who}`, async () => {
        const host = hostOverride ?? new URL(h.url).host;
        const got = await live(method, target, host, who);
        const identity = who === 'anon' ? null : { sub: 'u', username: who, roles: ROLES[who], amr: ['pwd'] };
        const v = evaluateRequest(ctx, { method, target, host }, { identity, via: identity ? 'bearer' : null });
        expect({ status: got.status, code: got.code }, 'gateway vs evaluateRequest').toEqual({ status: v.status, code: v.code });
        const e = explain(ctx, { method, url: target, host, roles: ROLES[who], mfa: false });
        const ev = who === 'anon' ? e.anonymous : e.identity.verdict;
        expect({ status: ev.status, code: ev.code }, 'gateway vs explain').toEqual({ status: got.status, code: got.code });
      });
    }
  }
});
