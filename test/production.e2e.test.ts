import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningJwk } from '../src/tokens/index.js';
import { freePort } from './support/services.js';
import { runCli, runCliInProcess, startHarness } from './support/helpers.js';

/**
 * Production mode (SPEC §1): NODE_ENV=production refuses to start without public_url, signing
 * keys and the encryption key, naming exactly what is missing in one line (exit 2); `config
 * check` refuses alike; the demo app never runs.
 */
let dir: string;
let keys: string;
const ENCRYPTION_KEY = Buffer.alloc(32, 7).toString('base64');

function configFile(name: string, body: string): string {
  const file = join(dir, name);
  writeFileSync(file, `listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\ndata_dir: ${join(dir, 'data')}\n${body}`);
  return file;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'portcullis-prod-'));
  keys = JSON.stringify({ keys: [await generateSigningJwk()] });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('NODE_ENV=production refuses to start on guesses', () => {
  const full = { NODE_ENV: 'production', PORTCULLIS_SIGNING_KEYS: '', PORTCULLIS_ENCRYPTION_KEY: ENCRYPTION_KEY };
  const cases: { missing: string; yaml: string; env: Record<string, string> }[] = [
    { missing: 'public_url', yaml: '', env: { PORTCULLIS_ENCRYPTION_KEY: ENCRYPTION_KEY } },
    { missing: 'signing keys', yaml: 'public_url: https://gw.example.com\n', env: { PORTCULLIS_ENCRYPTION_KEY: ENCRYPTION_KEY, PORTCULLIS_SIGNING_KEYS: '' } },
    { missing: 'the encryption key', yaml: 'public_url: https://gw.example.com\n', env: {} },
  ];
  for (const k of cases) {
    it(`config check names ${k.missing} alone, in one line, exit 2`, async () => {
      const file = configFile(`only-${k.missing.replace(/ /g, '-')}.yaml`, k.yaml);
      const env = { ...full, PORTCULLIS_SIGNING_KEYS: keys, ...k.env };
      if (k.env.PORTCULLIS_ENCRYPTION_KEY === undefined) delete (env as Record<string, string>).PORTCULLIS_ENCRYPTION_KEY;
      const r = await runCliInProcess(['config', 'check', '--config', file], { env });
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(new RegExp(`^portcullis: NODE_ENV=production refuses to start without ${k.missing} `));
      for (const other of ['public_url', 'signing keys', 'the encryption key'].filter((o) => o !== k.missing)) expect(r.stderr).not.toContain(other);
      expect(r.stdout).toBe('');
    });
  }

  it('with all three given, config check passes, and the same file in embedded mode needs none of them', async () => {
    const file = configFile('complete.yaml', 'public_url: https://gw.example.com\n');
    expect((await runCliInProcess(['config', 'check', '--config', file], { env: { ...full, PORTCULLIS_SIGNING_KEYS: keys } })).code).toBe(0);
    expect((await runCliInProcess(['config', 'check', '--config', configFile('bare.yaml', '')], { env: {} })).code).toBe(0);
  });

  it('the shipped config reads public_url from PORTCULLIS_PUBLIC_URL: unset means unset (embedded: derived; production: refused)', async () => {
    const shipped = ['config', 'check', '--config', 'config/gateway.yaml'];
    expect((await runCliInProcess(shipped, { env: {} })).code).toBe(0);
    const prod = await runCliInProcess(shipped, { env: { ...full, PORTCULLIS_SIGNING_KEYS: keys } });
    expect(prod.code).toBe(2);
    expect(prod.stderr).toMatch(/without public_url \(.*PORTCULLIS_PUBLIC_URL/);
    const given = await runCliInProcess(shipped, { env: { ...full, PORTCULLIS_SIGNING_KEYS: keys, PORTCULLIS_PUBLIC_URL: 'https://gw.example.com' } });
    expect(given.code, given.stderr).toBe(0);
  });

  it('config check parses the keys as serve does: an empty key set, a JWKS that is not one, a bad encryption key, each one line, exit 2', async () => {
    const file = configFile('keys.yaml', 'public_url: https://gw.example.com\n');
    const bad: [Record<string, string>, RegExp][] = [
      [{ PORTCULLIS_SIGNING_KEYS: '{}' }, /PORTCULLIS_SIGNING_KEYS.*expected a JWKS object/],
      [{ PORTCULLIS_SIGNING_KEYS: '{"keys":[]}' }, /the key set is empty/],
      [{ PORTCULLIS_SIGNING_KEYS: 'not json' }, /PORTCULLIS_SIGNING_KEYS is not valid JSON/],
      [{ PORTCULLIS_ENCRYPTION_KEY: 'too-short' }, /PORTCULLIS_ENCRYPTION_KEY/],
    ];
    for (const [env, message] of bad) {
      const r = await runCliInProcess(['config', 'check', '--config', file], { env: { ...full, PORTCULLIS_SIGNING_KEYS: keys, ...env } });
      expect(r.code, JSON.stringify(env)).toBe(2);
      expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(message)]);
    }
    const emptyFile = join(dir, 'empty-keys.json');
    writeFileSync(emptyFile, '{}');
    const r = await runCliInProcess(
      ['config', 'check', '--config', configFile('keyfile.yaml', `public_url: https://gw.example.com\nkeys: { signing_keys_file: ${emptyFile} }\n`)],
      {
        env: { ...full },
      },
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/expected a JWKS object/);
  });

  it('config check refuses workers: 2 without redis_url, as serve does, at the line of workers', async () => {
    const file = configFile('workers-memory.yaml', 'workers: 2\n');
    const r = await runCliInProcess(['config', 'check', '--config', file], { env: {} });
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')[0]).toBe(
      `${file}:4: workers: 2 needs storage.redis_url: in-process state (rate limits, lockouts, revocations, TOTP steps) is not shared between processes`,
    );
  });

  it('commands need none of it: migrate and user list run in production with only a database, and write no key file', async () => {
    const data = join(dir, 'cmd-data');
    const file = join(dir, 'cmd.yaml');
    writeFileSync(file, `data_dir: ${data}\nstorage: { database_url: "sqlite:${join(dir, 'cmd.db')}" }\n`);
    const env = { NODE_ENV: 'production' };
    const m = await runCliInProcess(['migrate', '--config', file], { env });
    expect(m.code, m.stderr).toBe(0);
    expect(m.stdout).toMatch(/^applied: /);
    const l = await runCliInProcess(['user', 'list', '--config', file], { env });
    expect(l.code, l.stderr).toBe(0);
    expect(l.stderr).toBe('');
    expect(existsSync(data)).toBe(false);
  });

  it('serve with workers: 2 refuses in the primary, before forking a worker (one line, exit 2): a gap, or a key that does not parse', async () => {
    const file = configFile('workers.yaml', 'workers: 2\nstorage: { redis_url: "redis://127.0.0.1:1" }\n');
    const r = await runCli(['serve', '--config', file], { env: { NODE_ENV: 'production' } });
    expect(r.code).toBe(2);
    expect(r.stderr).not.toMatch(/started \d+ workers/);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^portcullis: NODE_ENV=production refuses to start without public_url/)]);
    // Present but unusable: refused before forking too (a worker refusing would be restarted forever).
    const bad = await runCli(
      ['serve', '--config', configFile('workers-bad.yaml', 'workers: 2\npublic_url: https://gw.example.com\nstorage: { redis_url: "redis://127.0.0.1:1" }\n')],
      {
        env: { ...full, PORTCULLIS_SIGNING_KEYS: keys, PORTCULLIS_ENCRYPTION_KEY: 'bad' },
      },
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr).not.toMatch(/started \d+ workers/);
    expect(bad.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^portcullis: .*PORTCULLIS_ENCRYPTION_KEY/)]);
  });
});

describe('the demo app never runs in production', () => {
  it('a demo_upstream key is ignored with a warning: nothing listens on its port, no key file is written', async () => {
    const demoPort = await freePort();
    const h = await startHarness({
      extraYaml: `public_url: https://gw.example.com\ndemo_upstream: { listen: "127.0.0.1:${demoPort}" }\n`,
      env: { NODE_ENV: 'production', PORTCULLIS_SIGNING_KEYS: keys, PORTCULLIS_ENCRYPTION_KEY: ENCRYPTION_KEY },
    });
    try {
      expect(h.logs.filter((l) => l.event === 'demo_upstream_ignored')).toHaveLength(1);
      expect(h.logs.find((l) => l.event === 'listening')?.demo).toBeUndefined();
      const refused = await new Promise<string>((resolve) => {
        const s = connect(demoPort, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          resolve('connected');
        });
        s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      });
      expect(refused).toBe('ECONNREFUSED');
      expect(readdirSync(h.dir).filter((f) => /key/.test(f))).toEqual([]);
      // The issuer is public_url, not the address this replica happens to listen on.
      expect(h.app.config.issuer).toBe('https://gw.example.com');
    } finally {
      await h.close();
    }
  });

  it('outside production the same key runs the demo app', async () => {
    const demoPort = await freePort();
    const h = await startHarness({ extraYaml: `demo_upstream: { listen: "127.0.0.1:${demoPort}" }\n` });
    try {
      expect(h.logs.filter((l) => l.event === 'demo_upstream_ignored')).toHaveLength(0);
      expect((await fetch(`http://127.0.0.1:${demoPort}/`)).status).toBe(200);
    } finally {
      await h.close();
    }
  });
});
