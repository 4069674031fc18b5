import { describe, expect, it } from 'vitest';
import { route } from '../../test/support/routes.js';
import { compileRoutes, explain, formatFailure, formatTestFileProblem, parsePolicyTests, policyContext, runPolicyTests, summaryLine } from './index.js';

const ctx = policyContext(
  compileRoutes([
    route('reports-read', { path: '/reports/**', methods: ['GET'] }, { upstream: 'reports', access: 'authenticated' }),
    route('reports-write', { path: '/reports/**' }, { upstream: 'reports', access: { roles: ['editor'] } }),
    route('secure', { path: '/secure/**' }, { upstream: 'reports', access: { roles: ['admin'] }, mfa: true }),
    route('closed', { path: '/internal/**' }, { access: 'deny', upstream: undefined }),
    route('tenant', { host: '*.example.com', path: '/t/**' }, { upstream: 'reports', access: 'public' }),
  ]),
  { upstreams: {}, auth: { prefix: '/api/auth', allowed_origins: [] } },
  'https://gw.example.com',
);

const parse = (text: string) => parsePolicyTests(text, 'cases.yaml');

describe('parsePolicyTests', () => {
  it('reads the SPEC §2 shape, with the line of each case and the defaults', () => {
    const { cases, problems } = parse(`# comment
- name: viewers cannot delete reports
  request: { method: delete, url: /reports/7, host: gw.example.com }
  as: { roles: [viewer], mfa: false }
  expect: forbidden
  route: reports-write

- name: anyone may read
  request:
    url: /reports/7
  as: anonymous
  expect: unauthenticated
- name: an empty identity
  request: { url: /reports/7 }
  as: {}
  expect: allow
`);
    expect(problems).toEqual([]);
    expect(cases).toEqual([
      {
        file: 'cases.yaml',
        line: 2,
        index: 0,
        name: 'viewers cannot delete reports',
        request: { method: 'DELETE', url: '/reports/7', host: 'gw.example.com' },
        as: { roles: ['viewer'], mfa: false },
        expect: 'forbidden',
        route: 'reports-write',
      },
      {
        file: 'cases.yaml',
        line: 8,
        index: 1,
        name: 'anyone may read',
        request: { method: 'GET', url: '/reports/7' },
        as: 'anonymous',
        expect: 'unauthenticated',
      },
      {
        file: 'cases.yaml',
        line: 13,
        index: 2,
        name: 'an empty identity',
        request: { method: 'GET', url: '/reports/7' },
        as: { roles: [], mfa: false },
        expect: 'allow',
      },
    ]);
  });

  it('reports every malformed key as file:line: [index].key: message, in file order', () => {
    const { cases, problems } = parse(`- name: fine
  request: { url: /x }
  as: anonymous
  expect: allow
- name: broken
  request: { method: "G T", url: reports, port: 3 }
  as: { roles: admin, mfa: yes, groups: [] }
  expect: allowed
  route: [a]
- request: { url: /x }
  as: nobody
- just a string
- name: ""
  request: /x
  as: { roles: [ok, 7, ""] }
  expect: deny
  extra: 1
`);
    expect(cases.map((c) => c.name)).toEqual(['fine']);
    expect(problems.map(formatTestFileProblem)).toEqual([
      'cases.yaml:6: [1].request.port: unknown key (expected method, url, host)',
      'cases.yaml:6: [1].request.method: "G T" is not an HTTP method',
      'cases.yaml:6: [1].request.url: give a path starting with "/" or an http(s):// URL',
      'cases.yaml:7: [1].as.groups: unknown key (expected roles, mfa)',
      'cases.yaml:7: [1].as.roles: expected a list of role names',
      'cases.yaml:7: [1].as.mfa: expected true or false',
      'cases.yaml:8: [1].expect: "allowed" is not a decision: use one of allow | unauthenticated | forbidden | mfa_required | deny | no_route | bad_request | auth_api',
      'cases.yaml:9: [1].route: expected a non-empty string',
      'cases.yaml:10: [2].name: required',
      'cases.yaml:10: [2].expect: required',
      'cases.yaml:11: [2].as: expected anonymous, or { roles: [...], mfa: true|false }',
      'cases.yaml:12: [3]: expected a case: a map with name, request, as and expect',
      'cases.yaml:13: [4].name: expected a non-empty string',
      'cases.yaml:14: [4].request: expected a map: { method, url, host? }',
      'cases.yaml:15: [4].as.roles[1]: expected a role name',
      'cases.yaml:15: [4].as.roles[2]: expected a role name',
      'cases.yaml:17: [4].extra: unknown key (expected name, request, as, expect, route)',
    ]);
  });

  it('refuses YAML errors, duplicate keys, a file that is not a list, and an empty one', () => {
    expect(parse('- name: a\n  name: b\n').problems.map(formatTestFileProblem)).toEqual([
      expect.stringMatching(/^cases\.yaml:2: YAML: Map keys must be unique/),
    ]);
    expect(parse('name: a\nexpect: allow\n').problems.map(formatTestFileProblem)).toEqual([
      'cases.yaml:1: expected a list of test cases (- name: …, request: …, as: …, expect: …)',
    ]);
    for (const empty of ['', '# nothing\n', '[]\n']) {
      expect(parse(empty).problems.map(formatTestFileProblem), JSON.stringify(empty)).toEqual([
        'cases.yaml:1: the file holds no test cases (expected a list: - name: …)',
      ]);
    }
  });
});

describe('runPolicyTests', () => {
  const cases = parse(`- name: readers read
  request: { url: /reports/1 }
  as: { roles: [] }
  expect: allow
  route: reports-read
- name: viewers cannot delete reports
  request: { method: DELETE, url: /reports/7 }
  as: { roles: [viewer] }
  expect: forbidden
  route: reports-write
- name: editors delete (wrong expectation)
  request: { method: DELETE, url: /reports/7 }
  as: { roles: [editor] }
  expect: forbidden
- name: right decision, wrong route
  request: { method: DELETE, url: /reports/7 }
  as: anonymous
  expect: unauthenticated
  route: reports-read
- name: a route that does not exist
  request: { url: /nowhere }
  as: anonymous
  expect: no_route
  route: nowhere
- name: mfa
  request: { url: /secure/x }
  as: { roles: [admin] }
  expect: mfa_required
- name: mfa done
  request: { url: /secure/x }
  as: { roles: [admin], mfa: true }
  expect: allow
- name: tenant host
  request: { url: "https://a.example.com/t/x" }
  as: anonymous
  expect: allow
  route: tenant
- name: the Host defaults to public_url's, which the tenant rule matches too
  request: { url: /t/x }
  as: anonymous
  expect: allow
  route: tenant
- name: host overrides
  request: { url: /t/x, host: example.com }
  as: anonymous
  expect: no_route
- name: deny
  request: { url: /internal/x }
  as: { roles: [admin], mfa: true }
  expect: deny
- name: auth api
  request: { url: /api/auth/login }
  as: anonymous
  expect: auth_api
- name: a bad path
  request: { url: "/reports/a;b" }
  as: anonymous
  expect: bad_request
  route: reports-read
`).cases;
  const results = runPolicyTests(ctx, cases);

  it('passes and fails on the decision and, when given, the route', () => {
    expect(results.map((r) => [r.case.name, r.passed, r.failure ?? null])).toEqual([
      ['readers read', true, null],
      ['viewers cannot delete reports', true, null],
      ['editors delete (wrong expectation)', false, 'wrong decision'],
      ['right decision, wrong route', false, 'wrong route'],
      ['a route that does not exist', false, 'wrong route: the config has no route named "nowhere"'],
      ['mfa', true, null],
      ['mfa done', true, null],
      ['tenant host', true, null],
      ["the Host defaults to public_url's, which the tenant rule matches too", true, null],
      ['host overrides', true, null],
      ['deny', true, null],
      ['auth api', true, null],
      ['a bad path', true, null],
    ]);
    expect(summaryLine(results, 2)).toBe('10 passed, 3 failed (2 files)');
    expect(summaryLine(results.slice(0, 2), 1)).toBe('2 passed, 0 failed (1 file)');
  });

  it('decides exactly as explain does (the same function, the same caller)', () => {
    for (const r of results) {
      const c = r.case;
      const e = explain(ctx, { ...c.request, roles: c.as === 'anonymous' ? [] : c.as.roles, mfa: c.as !== 'anonymous' && c.as.mfa });
      const v = c.as === 'anonymous' ? e.anonymous : e.identity.verdict;
      expect(r.actual, c.name).toEqual({ decision: v.outcome, route: e.route?.name ?? null, status: v.status, code: v.code, reason: v.reason });
    }
  });

  it('prints a failure with its file:line, name, request, expected and actual (decision, route, reason)', () => {
    expect(formatFailure(results[2])).toBe(
      [
        'cases.yaml:11: FAIL editors delete (wrong expectation) (wrong decision)',
        '    request:  DELETE /reports/7 as roles [editor]',
        '    expected: forbidden',
        '    actual:   allow by route "reports-write" (forwarded): route "reports-write": user has one of roles [editor]',
      ].join('\n'),
    );
    expect(formatFailure(results[3]).split('\n').slice(2)).toEqual([
      '    expected: unauthenticated by route "reports-read"',
      '    actual:   unauthenticated by route "reports-write" (401 unauthenticated): route "reports-write" requires one of roles [editor]; request is not authenticated',
    ]);
    expect(formatFailure(results[4]).split('\n')[3]).toBe('    actual:   no_route (no route) (404 no_route): no route matches this request');
  });
});
