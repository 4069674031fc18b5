/**
 * End-to-end: what an idle gateway holds in memory (issue 9 part 5). A started embedded gateway
 * (SQLite, in-process state) has not loaded the zxcvbn dictionaries, the QR encoder, the
 * PostgreSQL driver or ioredis; each comes in only when its feature is used. Checked in a child
 * process (vitest's own module loader would hide Node's module cache).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'portcullis-footprint-'));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs an ES module body under tsx in a fresh node process; resolves with its stdout JSON. */
function runChild(body: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx/esm', '--input-type=module', '-e', body], { cwd: ROOT, env: { PATH: process.env.PATH, DIR: dir } });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`child exited ${code}: ${err}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').at(-1)!));
      } catch {
        reject(new Error(`no JSON from child: ${out} ${err}`));
      }
    });
  });
}

const CHILD = `
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Writable } from 'node:stream';
const { parseConfig } = await import('./src/config/index.ts');
const { createApp } = await import('./src/app.ts');
const { createLogger } = await import('./src/http/log.ts');
const cache = createRequire(import.meta.url).cache;
const loaded = () => {
  const pkgs = { zxcvbn: /[\\\\/]@zxcvbn-ts[\\\\/]/, qrcode: /[\\\\/]node_modules[\\\\/]qrcode[\\\\/]/, pg: /[\\\\/]node_modules[\\\\/]pg[\\\\/]/, ioredis: /[\\\\/]node_modules[\\\\/]ioredis[\\\\/]/ };
  const keys = Object.keys(cache);
  return Object.fromEntries(Object.entries(pkgs).map(([k, re]) => [k, keys.some((p) => re.test(p))]));
};
const dir = process.env.DIR;
const yaml = 'listen: 127.0.0.1:0\\nadmin: { listen: 127.0.0.1:0 }\\ndata_dir: ' + dir + '\\nstorage: { database_url: "sqlite:' + join(dir, 'f.db') + '" }\\n';
const config = parseConfig(yaml, join(dir, 'gateway.yaml'), {});
const app = await createApp({ config, env: {}, logger: createLogger('silent', new Writable({ write: (_c, _e, cb) => cb() })), bootstrapAdmin: false });
await app.start();
const idle = loaded();
const user = await app.db.users.create({ username: 'ann', email: null, roles: [], passwordHash: await app.hasher.hash('correct horse battery staple 42') });
await app.mfa.setup(user);
const afterSetup = loaded();
const { PasswordPolicy } = await import('./src/auth/policy.ts');
new PasswordPolicy().check('correct horse battery staple 42', { username: 'ann' });
const afterCheck = loaded();
await app.stop(100);
console.log(JSON.stringify({ idle, afterSetup, afterCheck }));
process.exit(0);
`;

describe('an idle embedded gateway', () => {
  it('has not loaded zxcvbn, qrcode, pg or ioredis; 2FA setup loads qrcode, a password check zxcvbn', async () => {
    const r = await runChild(CHILD);
    expect(r.idle).toEqual({ zxcvbn: false, qrcode: false, pg: false, ioredis: false });
    expect(r.afterSetup).toEqual({ zxcvbn: false, qrcode: true, pg: false, ioredis: false });
    expect(r.afterCheck).toEqual({ zxcvbn: true, qrcode: true, pg: false, ioredis: false });
  }, 30_000);
});
