import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readKeyFile } from '../src/tokens/index.js';
import { startEchoServer, type EchoServer } from '../src/demo/echo.js';
import { GOOD_PASSWORD, runCli, runCliInProcess } from './support/helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin/portcullis.js');

/**
 * Commands run in this process through `main(argv, io)` (the code the binary runs, without
 * ~2 s of process start each); the smoke tests below and `serve` start the real binary.
 */
const run = runCliInProcess;

let dir: string;
let cfg: string;
let echo: EchoServer;

function writeConfig(extraRoutes = ''): void {
  writeFileSync(
    cfg,
    `listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
data_dir: ${dir}
shutdown_grace: 10s
storage: { database_url: "sqlite:${join(dir, 'cli.db')}" }
upstreams:
  echo: { url: "${echo.url}" }
routes:
  - name: admin
    match: { path: /admin/** }
    upstream: echo
    access: { roles: [admin] }
  - name: everything
    match: { path: /** }
    upstream: echo
    access: public
${extraRoutes}`,
  );
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'portcullis-cli-'));
  cfg = join(dir, 'gateway.yaml');
  echo = await startEchoServer({ host: '127.0.0.1', port: 0 });
  writeConfig();
});
afterAll(async () => {
  await echo.close();
  rmSync(dir, { recursive: true, force: true });
});

const c = () => ['--config', cfg];

describe('the real binary (smoke tests: a new process each)', () => {
  it('--help prints the usage and exits 0', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: portcullis <command> \[options\]\n/);
    expect(r.stdout).toContain('user add NAME');
    expect(r.stderr).toBe('');
  });

  it('--version prints the package version and exits 0', async () => {
    const r = await runCli(['--version']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(r.stdout).toBe(`portcullis ${pkg.version}\n`);
  });

  it('user add reads the password from a pipe (--password-stdin), writes the database and exits 0', async () => {
    const r = await runCli(['user', 'add', 'smoke', '--password-stdin', ...c()], { stdin: `${GOOD_PASSWORD}\n` });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^created user smoke \([0-9a-f-]{36}\)\n$/);
    // Another run (in process) sees the user the real process wrote.
    expect(JSON.parse((await run(['user', 'show', 'smoke', ...c()])).stdout)).toMatchObject({ username: 'smoke' });
    expect((await run(['user', 'delete', 'smoke', ...c()])).code).toBe(0);
  });
});

describe('portcullis config check', () => {
  it('accepts a valid file', async () => {
    const r = await run(['config', 'check', ...c()]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('ok (2 routes, 1 upstreams)');
  });

  it('lists every problem with file:line and key path, exit 2, no stack', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      `listen: nowhere\nupstreams:\n  app: { url: "http://x", timeout: soon }\nroutes:\n  - name: a\n    match: { path: /x }\n    upstream: app\n    access: public\n    colour: red\n`,
    );
    const r = await run(['config', 'check', '--config', bad]);
    expect(r.code).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toContain(`${bad}:1: listen: not a listen address: "nowhere" (use host:port, e.g. 127.0.0.1:8080)`);
    expect(lines.some((l) => l.startsWith(`${bad}:3: upstreams.app.timeout:`))).toBe(true);
    expect(lines).toContain(`${bad}:9: routes[0].colour: unknown key`);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('reports a bad route pattern at its line', async () => {
    const bad = join(dir, 'bad-pattern.yaml');
    writeFileSync(
      bad,
      `upstreams: { app: { url: "http://x" } }\nroutes:\n  - name: a\n    match:\n      path: /static/**.js\n    upstream: app\n    access: public\n`,
    );
    const r = await run(['config', 'check', '--config', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`${bad.replace(/[.]/g, '\\.')}:5: routes\\[0\\]\\.match\\.path: `));
  });

  it('takes the file from PORTCULLIS_CONFIG', async () => {
    const r = await run(['config', 'check'], { env: { PORTCULLIS_CONFIG: join(dir, 'missing.yaml') } });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('missing.yaml: (top level): cannot read config: file not found');
  });
});

describe('portcullis user …', () => {
  it('adds a user with email and roles, enforcing the password policy', async () => {
    const ok = await run(['user', 'add', 'Alice', '--email', 'alice@example.com', '--role', 'admin', '--role', 'ops', '--password-stdin', ...c()], {
      stdin: `${GOOD_PASSWORD}\n`,
    });
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^created user alice \([0-9a-f-]{36}\) with roles admin, ops\n$/);

    const dup = await run(['user', 'add', 'alice', '--password-stdin', ...c()], { stdin: GOOD_PASSWORD });
    expect(dup.code).toBe(2);
    expect(dup.stderr.trim().split('\n')).toHaveLength(1);

    const weak = await run(['user', 'add', 'bob', '--password-stdin', ...c()], { stdin: 'password' });
    expect(weak.code).toBe(2);
    expect(weak.stderr).toMatch(/^portcullis: .*at least 12/i);
    expect(weak.stderr.trim().split('\n')).toHaveLength(1);

    const inject = await run(['user', 'add', "admin' OR '1'='1", '--password-stdin', ...c()], { stdin: GOOD_PASSWORD });
    expect(inject.code).toBe(2);
    expect(inject.stderr).toContain('username');

    const noStdin = await run(['user', 'add', 'carol', ...c()]);
    expect(noStdin.code).toBe(2);
    expect(noStdin.stderr).toContain('--password-stdin');
  });

  it('lists and shows users', async () => {
    const list = await run(['user', 'list', ...c()]);
    expect(list.code).toBe(0);
    expect(list.stdout.split('\n')[0]).toMatch(/^USERNAME\s+ROLES\s+STATUS\s+MFA\s+EMAIL$/);
    expect(list.stdout).toMatch(/alice\s+admin,ops\s+active\s+-\s+alice@example.com/);
    const json = JSON.parse((await run(['user', 'list', '--json', ...c()])).stdout);
    expect(json).toEqual([
      expect.objectContaining({ username: 'alice', roles: ['admin', 'ops'], disabled: false, mfa_enabled: false, email: 'alice@example.com' }),
    ]);
    const show = JSON.parse((await run(['user', 'show', 'ALICE', ...c()])).stdout);
    expect(show).toMatchObject({ username: 'alice', active_sessions: 0 });
    const missing = await run(['user', 'show', 'nobody', ...c()]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe('portcullis: no user "nobody"\n');
  });

  it('sets roles, disables, enables, changes the password, resets 2FA, deletes', async () => {
    expect((await run(['user', 'set-roles', 'alice', 'viewer', ...c()])).code).toBe(0);
    let show = JSON.parse((await run(['user', 'show', 'alice', ...c()])).stdout);
    expect(show.roles).toEqual(['viewer']);
    expect((await run(['user', 'disable', 'alice', ...c()])).stdout).toMatch(/alice disabled/);
    expect(JSON.parse((await run(['user', 'show', 'alice', ...c()])).stdout).disabled).toBe(true);
    expect((await run(['user', 'enable', 'alice', ...c()])).code).toBe(0);
    expect(JSON.parse((await run(['user', 'show', 'alice', ...c()])).stdout).disabled).toBe(false);
    const pw = await run(['user', 'passwd', 'alice', '--password-stdin', ...c()], { stdin: 'another long passphrase 77 zebra' });
    expect(pw.code).toBe(0);
    expect(pw.stdout).toContain('password of alice changed');
    const weak = await run(['user', 'passwd', 'alice', '--password-stdin', ...c()], { stdin: 'alice-alice-alice-1' });
    expect(weak.code).toBe(2);
    expect((await run(['user', 'reset-2fa', 'alice', ...c()])).stdout).toContain('reset');
    show = JSON.parse((await run(['user', 'show', 'alice', ...c()])).stdout);
    expect(show.mfa_enabled).toBe(false);
    expect((await run(['user', 'delete', 'alice', ...c()])).code).toBe(0);
    expect((await run(['user', 'show', 'alice', ...c()])).code).toBe(2);
  }, 120_000);

  it('set-roles with no role is a usage error (nothing changes); removing every role takes --none', async () => {
    expect((await run(['user', 'add', 'rolf', '--role', 'ops', '--password-stdin', ...c()], { stdin: 'violet tangerine moonbeam 4471 harbour' })).code).toBe(0);
    const none = await run(['user', 'set-roles', 'rolf', ...c()]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^portcullis: usage: portcullis user set-roles NAME R\.\.\. \(at least one role; --none/);
    expect(none.stderr.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse((await run(['user', 'show', 'rolf', ...c()])).stdout).roles).toEqual(['ops']);
    // Both at once is as ambiguous as neither.
    expect((await run(['user', 'set-roles', 'rolf', 'ops', '--none', ...c()])).code).toBe(2);
    const cleared = await run(['user', 'set-roles', 'rolf', '--none', ...c()]);
    expect(cleared.code).toBe(0);
    expect(cleared.stdout).toMatch(/roles of rolf: \(none\)/);
    expect(JSON.parse((await run(['user', 'show', 'rolf', ...c()])).stdout).roles).toEqual([]);
    expect((await run(['user', 'delete', 'rolf', ...c()])).code).toBe(0);
  }, 60_000);

  it('rejects unknown subcommands and options with one line and exit 2', async () => {
    const r = await run(['user', 'frobnicate', ...c()]);
    expect(r.code).toBe(2);
    const o = await run(['user', 'list', '--colour', ...c()]);
    expect(o.code).toBe(2);
    expect(o.stderr).toBe('portcullis: unknown option --colour\n');
  });
});

describe('portcullis <command> --help', () => {
  // Every command of the usage, with its sub-command where it has them.
  const commands = [
    ['serve'],
    ['config', 'check'],
    ['migrate'],
    ['user', 'add'],
    ['user', 'list'],
    ['user', 'unlock'],
    ['policy', 'explain'],
    ['keys', 'generate'],
  ];
  for (const cmd of commands) {
    it(`${cmd.join(' ')} --help prints its usage on stdout and exits 0 (nothing run)`, async () => {
      for (const flag of ['--help', '-h']) {
        const r = await run([...cmd, flag, ...c()]);
        expect(r.stderr, flag).toBe('');
        expect(r.code, flag).toBe(0);
        expect(r.stdout, flag).toMatch(new RegExp(`^usage: portcullis ${cmd[0]}`));
      }
    });
  }

  it("a command without its sub-command and with --help prints that command group's usage (exit 0)", async () => {
    for (const group of ['user', 'config', 'policy', 'keys']) {
      const r = await run([group, '--help']);
      expect(r.code, group).toBe(0);
      expect(r.stdout, group).toMatch(new RegExp(`^usage: portcullis ${group}`));
    }
  });
});

describe('portcullis policy explain / keys generate', () => {
  it('explains which route and rule decide', async () => {
    const r = await run(['policy', 'explain', '--method', 'GET', '--url', 'https://gw.example.com/admin/users?x=1', '--roles', 'viewer', ...c()]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('admin');
    expect(r.stdout).toMatch(/forbidden/);
    const ok = await run(['policy', 'explain', '--method', 'GET', '--url', '/admin/users', '--roles', 'admin', ...c()]);
    expect(ok.stdout).toMatch(/allow/);
    const norm = await run(['policy', 'explain', '--url', '/public/../admin/x', ...c()]);
    expect(norm.stdout).toContain('/admin/x');
  });

  it('--json prints the decision the gateway would make (same function): /nowhere;x is 400, not 404', async () => {
    const r = await run(['policy', 'explain', '--json', '--method', 'GET', '--url', '/nowhere;x', ...c()]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ route: 'everything', decision: 'bad_request', status: 400, code: 'bad_path' });
    expect(out.anonymous).toMatchObject({ decision: 'bad_request', status: 400 });
    const host = await run(['policy', 'explain', '--json', '--method', 'TRACE', '--url', '/x', '--host', 'gw.example.com', ...c()]);
    expect(JSON.parse(host.stdout)).toMatchObject({ decision: 'bad_request', status: 405, code: 'method_not_allowed' });
  });

  it('prints a key set usable as signing_keys_file as is ({"keys":[…]}, one private Ed25519 key)', async () => {
    const r = await run(['keys', 'generate']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(Object.keys(out)).toEqual(['keys']);
    expect(out.keys).toHaveLength(1);
    const [jwk] = out.keys;
    expect(jwk).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA' });
    expect(typeof jwk.d).toBe('string');
    // Written to a file unchanged, it is a signing key file the gateway reads.
    const file = join(mkdtempSync(join(tmpdir(), 'portcullis-keys-')), 'signing-keys.json');
    writeFileSync(file, r.stdout, { mode: 0o600 });
    const set = await readKeyFile(file);
    expect(set.publicJwks().keys[0].kid).toBe(jwk.kid);
  });
});

/** Starts `portcullis serve` and waits for its "listening" log line. */
async function serve(
  env: NodeJS.ProcessEnv = {},
): Promise<{ child: ChildProcess; url: string; adminUrl: string; out: () => string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [BIN, 'serve', ...c()], { cwd: ROOT, env: { PATH: process.env.PATH, ...env } });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const started = Date.now();
  while (Date.now() - started < 20_000) {
    const line = out.split('\n').find((l) => l.includes('"event":"listening"'));
    if (line) {
      const j = JSON.parse(line);
      return { child, url: j.url, adminUrl: j.admin, out: () => out, exited };
    }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`serve did not start:\n${out}`);
}

describe('portcullis serve (the real binary: signals and exit codes of its own process)', () => {
  // Also the smoke test of a refusal: the real binary turns bad input into exit 2.
  it('refuses to start in production without public_url, signing keys and the encryption key (exit 2, one line naming each)', async () => {
    const r = await runCli(['serve', ...c()], { env: { NODE_ENV: 'production' } });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^portcullis: NODE_ENV=production refuses to start without public_url .*; signing keys .*; the encryption key /);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stdout).toBe('');
  });

  describe('one running gateway: SIGHUP reloads, then SIGTERM drains and ends it', () => {
    // One process for both (a start costs seconds): the reload test runs first and leaves it
    // serving; the drain test ends it.
    let s: Awaited<ReturnType<typeof serve>>;
    beforeAll(async () => {
      s = await serve();
    });
    afterAll(async () => {
      writeConfig();
      if (s.child.exitCode === null && s.child.signalCode === null) {
        s.child.kill('SIGKILL');
        await s.exited;
      }
    });

    it('reloads the config on SIGHUP and keeps the old one when the new one is invalid', async () => {
      try {
        expect((await fetch(`${s.url}/internal/x`)).status).toBe(200);
        writeConfig(`  - name: never\n    match: { path: /never }\n    access: deny\n`);
        // Put a deny route first by rewriting the file with it at the top of the list.
        const text = readFileSync(cfg, 'utf8').replace('routes:\n', 'routes:\n  - name: internal\n    match: { path: /internal/** }\n    access: deny\n');
        writeFileSync(cfg, text);
        s.child.kill('SIGHUP');
        await waitFor(async () => (await fetch(`${s.url}/internal/x`)).status === 403);
        writeFileSync(cfg, text.replace('access: deny', 'access: sometimes'));
        s.child.kill('SIGHUP');
        // The file watch may see the change before the signal does: at least one failure.
        await waitFor(async () => /portcullis_config_reloads_total\{result="failure"\} [1-9]/.test(await (await fetch(`${s.adminUrl}/metrics`)).text()));
        expect((await fetch(`${s.url}/internal/x`)).status).toBe(403);
        // Log lines are written in batches (within 100 ms).
        await waitFor(async () => s.out().includes('"event":"config_reloaded","result":"failure"'));
      } finally {
        writeConfig();
      }
    });

    it('drains in-flight requests on SIGTERM, then exits 0', async () => {
      expect((await fetch(`${s.adminUrl}/healthz`)).status).toBe(200);
      const slow = fetch(`${s.url}/__echo/slow?ms=1500`).then(async (r) => ({ status: r.status, body: await r.text() }));
      // The slow request has reached the upstream…
      await waitFor(async () => ((await (await fetch(`${echo.url}/__echo/stats`)).json()) as { inFlight: number }).inFlight >= 1, 10_000, 20);
      s.child.kill('SIGTERM');
      // …and the gateway has begun its shutdown (it logs this, then stops accepting, in one turn).
      await waitFor(async () => s.out().includes('"event":"shutdown"'), 10_000, 20);
      // Stopped accepting: a new connection is refused while the slow one is still running
      // (a request of its own connection: fetch could reuse a kept-alive one from the test above).
      await expect(getOnNewConnection(`${s.url}/public`)).rejects.toThrow();
      const done = await slow;
      expect(done.status).toBe(200);
      expect(await s.exited).toBe(0);
      expect(s.out()).toContain('"event":"stopped"');
    });
  });
});

/** GET on a connection of its own (no keep-alive pool); resolves with the status. */
function getOnNewConnection(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpGet(url, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
  });
}

async function waitFor(check: () => Promise<boolean>, ms = 10_000, everyMs = 100): Promise<void> {
  const start = Date.now();
  while (Date.now() - start < ms) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error('condition not met in time');
}
