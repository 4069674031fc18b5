import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCliInProcess } from '../../test/support/helpers.js';
import { ConfigError, parseConfig } from './index.js';
import { parseRedisUrl, redisUrlProblem, RedisUrlError, type SentinelRedisTarget } from './redis-url.js';

const sentinel = (url: string) => parseRedisUrl(url) as SentinelRedisTarget;

describe('storage.redis_url: the Sentinel form', () => {
  it('parses hosts, ports (default 26379), the master name and db 0', () => {
    expect(sentinel('redis+sentinel://10.0.0.1:26380,sentinel-b,[::1]:26381/mymaster')).toEqual({
      kind: 'sentinel',
      sentinels: [
        { host: '10.0.0.1', port: 26380 },
        { host: 'sentinel-b', port: 26379 },
        { host: '::1', port: 26381 },
      ],
      name: 'mymaster',
      tls: false,
      db: 0,
      display: 'Sentinel 10.0.0.1:26380,sentinel-b:26379,[::1]:26381 (master "mymaster")',
    });
  });

  it('takes a password (percent-decoded) and a user for the Redis servers, a db number, and credentials for the Sentinels', () => {
    const t = sentinel('redis+sentinel://app:p%40ss%3Aw%2Frd@h1:1,h2:2/prod-main_1.x/7?sentinel_username=mon&sentinel_password=s%26cret');
    expect(t).toMatchObject({ username: 'app', password: 'p@ss:w/rd', name: 'prod-main_1.x', db: 7, sentinelUsername: 'mon', sentinelPassword: 's&cret' });
    expect(sentinel('redis+sentinel://:only-pass@h/m')).toMatchObject({ password: 'only-pass' });
    expect(sentinel('redis+sentinel://:only-pass@h/m').username).toBeUndefined();
    // An unencoded "@" in the password still works: the last "@" ends the user info.
    expect(sentinel('redis+sentinel://:a@b@h/m')).toMatchObject({ password: 'a@b', sentinels: [{ host: 'h', port: 26379 }] });
  });

  it('never shows a password in its display form', () => {
    expect(sentinel('redis+sentinel://u:hunter2@h/m?sentinel_password=hunter3').display).toBe('Sentinel h:26379 (master "m")');
  });

  it('rediss+sentinel:// asks for TLS; the scheme is case-insensitive; a trailing slash is fine', () => {
    expect(sentinel('rediss+sentinel://h/m').tls).toBe(true);
    expect(sentinel('REDIS+SENTINEL://h/m/').name).toBe('m');
    expect(sentinel('redis+sentinel://h/m/3/').db).toBe(3);
  });

  const malformed: [string, RegExp][] = [
    ['redis+sentinel://', /no Sentinel hosts/],
    ['redis+sentinel:///mymaster', /no Sentinel hosts/],
    ['redis+sentinel://:pw@/mymaster', /no Sentinel hosts/],
    ['redis+sentinel://h1:26379', /no master name/],
    ['redis+sentinel://h1:26379/', /no master name/],
    ['redis+sentinel://h1:26379?sentinel_password=x', /no master name/],
    ['redis+sentinel://h1:26379//0', /no master name/],
    ['redis+sentinel://h1:abc/m', /Sentinel #1 \(h1\): the port must be a number/],
    ['redis+sentinel://h1:/m', /Sentinel #1 \(h1\): the port must be a number/],
    ['redis+sentinel://h1:0/m', /port 0 is out of range/],
    ['redis+sentinel://h1:65536/m', /port 65536 is out of range/],
    ['redis+sentinel://h1:123456/m', /the port must be a number/],
    ['redis+sentinel://h1:-1/m', /the port must be a number/],
    ['redis+sentinel://h1:26379,h2:99999/m', /Sentinel #2 \(h2\): port 99999 is out of range/],
    ['redis+sentinel://h1,,h2/m', /empty entry #2/],
    ['redis+sentinel://h1,/m', /empty entry #2/],
    ['redis+sentinel://,h1/m', /empty entry #1/],
    ['redis+sentinel://:26379/m', /Sentinel #1: no host before the port/],
    ['redis+sentinel://h1:26379:1/m', /IPv6 address needs brackets/],
    ['redis+sentinel://::1/m', /IPv6 address needs brackets/],
    ['redis+sentinel://[::1/m', /"\[" without "\]"/],
    ['redis+sentinel://[::1]x/m', /unexpected text after the IPv6 address/],
    ['redis+sentinel://[zz]:1/m', /not an IPv6 address/],
    ['redis+sentinel://[]:1/m', /not an IPv6 address/],
    ['redis+sentinel://h_1!:1/m', /"h_1!" is not a host name/],
    ['redis+sentinel://-h/m', /is not a host name/],
    ['redis+sentinel://h../m', /is not a host name/],
    ['redis+sentinel://h1:1,H1:1/m', /Sentinel H1:1 is listed twice/],
    ['redis+sentinel://h1,h1:26379/m', /listed twice/],
    ['redis+sentinel://h/my master', /whitespace/],
    ['redis+sentinel://h/my*master', /master name may hold only/],
    ['redis+sentinel://h/m/x', /database number .* non-negative integer/],
    ['redis+sentinel://h/m/-1', /non-negative integer/],
    ['redis+sentinel://h/m/1/2', /more segments/],
    ['redis+sentinel://h/m?role=slave', /unknown parameter "role" \(known: sentinel_username, sentinel_password\)/],
    ['redis+sentinel://h/m?sentinel_password=a&sentinel_password=b', /given twice/],
    ['redis+sentinel://h/m?sentinel_password=', /sentinel_password is empty/],
    ['redis+sentinel://h/m?sentinel_password', /sentinel_password is empty/],
    ['redis+sentinel://h/m?sentinel_username=u', /sentinel_username needs sentinel_password/],
    ['redis+sentinel://h/m?sentinel_password=%zz', /bad percent-encoding/],
    ['redis+sentinel://secret@h/m', /user info without a password/],
    ['redis+sentinel://:%E0%A4%A@h/m', /bad percent-encoding in the password/],
    ['redis+sentinel://h/m#frag', /no #fragment/],
    ['redis+sentinal://h/m', /unsupported scheme "redis\+sentinal:\/\/"/],
    ['sentinel://h/m', /unsupported scheme "sentinel:\/\/"/],
    [' redis+sentinel://h/m', /whitespace/],
    ['redis+sentinel://h /m', /whitespace/],
  ];

  it.each(malformed)('%s is refused: %s', (url, message) => {
    expect(() => parseRedisUrl(url)).toThrow(RedisUrlError);
    expect(redisUrlProblem(url)).toMatch(message);
  });

  it('no message repeats a password', () => {
    for (const url of ['redis+sentinel://hunter2@h/m', 'redis+sentinel://:hunter2@h/m?x=1', 'redis+sentinel://:hunter2@h,,h/m', 'redis://:hunter2@h/x']) {
      expect(redisUrlProblem(url)).toBeDefined();
      expect(redisUrlProblem(url)).not.toContain('hunter2');
    }
  });
});

describe('storage.redis_url: other forms', () => {
  it('empty means in-process state; redis://, rediss:// and socket paths pass through to ioredis unchanged', () => {
    expect(redisUrlProblem('')).toBeUndefined();
    for (const url of [
      'redis://127.0.0.1:6379',
      'redis://:pw@redis.internal:6380/2',
      'rediss://user:pw@cache.example.com',
      'redis://h/',
      'redis://[::1]:6379/0',
      '/run/redis.sock',
    ]) {
      const t = parseRedisUrl(url);
      expect(t.kind, url).toBe('standalone');
      expect(t.kind === 'standalone' && t.url).toBe(url);
    }
    expect(parseRedisUrl('redis://:pw@redis.internal:6380/2').display).toBe('redis.internal:6380');
    expect(parseRedisUrl('redis://h').display).toBe('h:6379');
  });

  const malformed: [string, RegExp][] = [
    ['localhost:6379', /not a Redis URL: use redis:\/\/host:6379/],
    ['127.0.0.1', /not a Redis URL/],
    ['http://127.0.0.1:6379', /unsupported scheme "http:\/\/"/],
    ['postgres://x', /unsupported scheme/],
    ['redis://', /no host/],
    ['redis://:6379', /not a valid URL|no host/],
    ['redis://h:99999', /not a valid URL/],
    ['redis://h:0', /port 0/],
    ['redis://h1:1,h2:2', /needs Redis Sentinel/],
    ['redis://h/db', /database number/],
    ['redis://h/0/1', /database number/],
    ['redis://h/0#x', /fragment/],
    ['redis://:%zz@h', /bad percent-encoding in the password/],
    ['   ', /empty Redis URL/],
  ];

  it.each(malformed)('%s is refused: %s', (url, message) => {
    expect(redisUrlProblem(url)).toMatch(message);
  });
});

describe('storage.redis_url in a config file', () => {
  const config = (redisUrl: string) => `
storage:
  database_url: "sqlite::memory:"
  redis_url: "${redisUrl}"
upstreams:
  app: { url: http://127.0.0.1:9000 }
routes:
  - name: all
    match: { path: /** }
    upstream: app
    access: authenticated
`;

  it('a good Sentinel URL loads as given (the client parses it)', () => {
    const url = 'redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster/1';
    expect(parseConfig(config(url), 'gw.yaml', {}).storage.redis_url).toBe(url);
  });

  it('a malformed one is a problem at its line, under storage.redis_url', () => {
    try {
      parseConfig(config('redis+sentinel://h1:26379,h2:x/mymaster'), 'gw.yaml', {});
      expect.fail('expected a ConfigError');
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as Error).message).toBe('gw.yaml:4: storage.redis_url: Sentinel #2 (h2): the port must be a number from 1 to 65535');
    }
  });

  it('`portcullis config check` lists it as file:line: storage.redis_url: message and exits 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-redis-url-'));
    try {
      const file = join(dir, 'gateway.yaml');
      writeFileSync(file, config('redis+sentinel://:secret@h1:26379'));
      const r = await runCliInProcess(['config', 'check', '--config', file]);
      expect(r.code).toBe(2);
      expect(r.stderr + r.stdout).toContain(`${file}:4: storage.redis_url: no master name`);
      expect(r.stderr + r.stdout).not.toContain('secret');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
