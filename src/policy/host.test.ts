import { describe, expect, it } from 'vitest';
import { compileRoutes, evaluateRequest, policyContext, validHost } from './index.js';
import { route } from '../../test/support/routes.js';

describe('validHost', () => {
  it.each([
    'a.example.com',
    'A.EXAMPLE.COM.',
    'localhost',
    'example.com:443',
    'example.com.:8443',
    '127.0.0.1',
    '127.0.0.1:8080',
    '[::1]',
    '[::1]:80',
    '[2001:db8::1]:65535',
    '[::ffff:127.0.0.1]',
    'xn--bcher-kva.example',
    'under_score.example',
    'a:0',
  ])('accepts %j', (host) => {
    expect(validHost(host)).toBe(true);
  });

  it.each([
    '',
    'a b',
    ' example.com',
    'host..',
    '.host',
    'a..b',
    '[intranet.example.com]',
    '[dead.beef]',
    '[::1',
    '[::1]x',
    '[::1]:',
    '[1::2::3]',
    'ex@mple.com',
    'user@example.com',
    'host:abc',
    'host:99999',
    'host:65536',
    'host:',
    'host:80:80',
    '::1',
    'a%2eb',
    'a/b',
    'a\\b',
    '-a.example',
    'a-.example',
    'bücher.example',
    `${'a'.repeat(64)}.example`,
    `${'a.'.repeat(130)}com`,
  ])('refuses %j', (host) => {
    expect(validHost(host)).toBe(false);
  });
});

describe('Host in the decision', () => {
  const ctx = policyContext(
    compileRoutes([route('admin-host', { host: 'admin.example.com' }, { access: 'deny' }), route('rest', {}, { access: 'public' })]),
    { upstreams: {}, auth: { prefix: '/api/auth', allowed_origins: [] } },
    'https://gw.example.com',
  );
  const anon = { identity: null, via: null } as const;

  it('an invalid Host is 400 bad_host before anything else', () => {
    for (const host of ['admin.example.com..', '[admin.example.com]', 'admin.example.com:99999', 'a b', '']) {
      expect(evaluateRequest(ctx, { method: 'GET', target: '/x', host }, anon), host).toMatchObject({ decision: 'bad_request', status: 400, code: 'bad_host' });
    }
  });

  it('host rules see every valid spelling of the host (case, one trailing dot, port)', () => {
    for (const host of ['admin.example.com', 'ADMIN.Example.COM', 'admin.example.com.', 'admin.example.com:443', 'Admin.Example.Com.:8443']) {
      expect(evaluateRequest(ctx, { method: 'GET', target: '/x', host }, anon).decision, host).toBe('deny');
    }
    expect(evaluateRequest(ctx, { method: 'GET', target: '/x', host: 'other.example.com' }, anon).decision).toBe('allow');
    expect(evaluateRequest(ctx, { method: 'GET', target: '/x', host: undefined }, anon).decision).toBe('allow');
  });
});
