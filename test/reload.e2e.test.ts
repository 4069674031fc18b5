import { mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/index.js';
import { createApp } from '../src/app.js';
import { createLogger } from '../src/http/log.js';
import { Writable } from 'node:stream';
import { addUser, login, metricsText, sample, startHarness, type Harness } from './support/helpers.js';

/**
 * Reload on file change (SPEC §2, issue 12 part 4): an editor-style write (temp file renamed
 * over), a Kubernetes-style symlink swap, a burst of writes (one reload), an invalid file (the
 * old config keeps serving; the failure is logged with file:line and counted), and in-flight
 * requests finishing on the config they started with.
 */
const ROUTES_A = `
routes:
  - name: public
    match: { path: /public/** }
    upstream: echo
    access: public
`;
const ROUTES_B = `${ROUTES_A}  - name: added
    match: { path: /added/** }
    upstream: echo
    access: public
`;

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

/** Polls until `fn` is true (the watch debounces 300 ms), or fails after `ms`. */
async function eventually(fn: () => Promise<boolean> | boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

const status = async (url: string) => (await fetch(url)).status;
const reloads = async (h: Harness, result: string) => sample(await metricsText(h), 'portcullis_config_reloads_total', { result });

/** An editor's save: the new text goes to a temporary file in the same folder, renamed over the config. */
function editorSave(file: string, text: string): void {
  const tmp = `${file}.swp~`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

describe('the gateway reloads when its config file changes on disk', () => {
  it('an editor-style save (temp file renamed over) applies the new routes; a burst of saves is one reload', async () => {
    h = await startHarness({ routes: ROUTES_A });
    const file = join(h.dir, 'gateway.yaml');
    expect(await status(`${h.url}/added/x`)).toBe(404);
    const before = await reloads(h, 'success');
    const text = readFileSync(file, 'utf8');
    // Five saves within 100 ms, the last one the real change.
    for (let i = 0; i < 4; i++) editorSave(file, `${text}\n# draft ${i}\n`);
    editorSave(file, text.replace(ROUTES_A, ROUTES_B));
    await eventually(async () => (await status(`${h!.url}/added/x`)) === 200);
    await new Promise((r) => setTimeout(r, 800));
    expect((await reloads(h, 'success')) - before).toBe(1);
    expect(h.logs.filter((l) => l.event === 'config_changed')).toHaveLength(1);
    // A save that changes nothing reloads nothing.
    editorSave(file, readFileSync(file, 'utf8'));
    await new Promise((r) => setTimeout(r, 800));
    expect((await reloads(h, 'success')) - before).toBe(1);
  });

  it('a busy neighbour file does not hold a change back for long; a SIGHUP-style reload and the watch apply one change once', async () => {
    h = await startHarness({ routes: ROUTES_A });
    const file = join(h.dir, 'gateway.yaml');
    const text = readFileSync(file, 'utf8');
    const before = await reloads(h, 'success');
    // A file beside the config written every 100 ms keeps restarting the debounce.
    let n = 0;
    const busy = setInterval(() => writeFileSync(join(h!.dir, 'busy.log'), `${n++}\n`, { flag: 'a' }), 100);
    try {
      editorSave(file, text.replace(ROUTES_A, ROUTES_B));
      const t0 = Date.now();
      await eventually(async () => (await status(`${h!.url}/added/x`)) === 200, 4000);
      expect(Date.now() - t0).toBeLessThan(3500);
    } finally {
      clearInterval(busy);
    }
    // The next change arrives by the file and by an explicit reload (SIGHUP) at once: one reload.
    editorSave(file, text);
    expect(h.app.reload().ok).toBe(true);
    await new Promise((r) => setTimeout(r, 1000));
    expect((await reloads(h, 'success')) - before).toBe(2);
    expect(await status(`${h.url}/added/x`)).toBe(404);
  });

  it('an invalid file keeps the old config serving, logs each problem with file:line and counts a failure; fixing it reloads', async () => {
    h = await startHarness({ routes: ROUTES_A });
    const file = join(h.dir, 'gateway.yaml');
    const text = readFileSync(file, 'utf8');
    editorSave(file, text.replace(ROUTES_A, `${ROUTES_B}  - name: broken\n    match: { path: /x/** }\n    upstream: nowhere\n    access: public\n`));
    await eventually(async () => (await reloads(h!, 'failure')) === 1);
    expect(await status(`${h.url}/public/x`)).toBe(200);
    expect(await status(`${h.url}/added/x`)).toBe(404);
    const failed = h.logs.find((l) => l.event === 'config_reloaded' && l.result === 'failure');
    expect(failed?.problems).toEqual([expect.stringMatching(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+: routes\\[2\\]\\.upstream: `))]);
    editorSave(file, text.replace(ROUTES_A, ROUTES_B));
    await eventually(async () => (await status(`${h!.url}/added/x`)) === 200);
  });

  it('a Kubernetes ConfigMap-style update (the ..data symlink swapped) is seen', async () => {
    h = await startHarness({ routes: ROUTES_A });
    // Rebuild the harness's config as a ConfigMap volume lays it out, then point a new app at it.
    const vol = join(h.dir, 'vol');
    mkdirSync(join(vol, '..2026_a'), { recursive: true });
    const text = readFileSync(join(h.dir, 'gateway.yaml'), 'utf8');
    writeFileSync(join(vol, '..2026_a', 'gateway.yaml'), text);
    symlinkSync('..2026_a', join(vol, '..data'));
    symlinkSync('..data/gateway.yaml', join(vol, 'gateway.yaml'));
    const logs: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(c, _e, cb) {
        for (const line of String(c).split('\n')) if (line) logs.push(JSON.parse(line));
        cb();
      },
    });
    const app = await createApp({
      config: parseConfig(text, join(vol, 'gateway.yaml'), {}),
      env: {},
      logger: createLogger('info', sink),
      bootstrapAdmin: false,
    });
    const { url } = await app.start();
    try {
      expect(await status(`${url}/added/x`)).toBe(404);
      mkdirSync(join(vol, '..2026_b'));
      writeFileSync(join(vol, '..2026_b', 'gateway.yaml'), text.replace(ROUTES_A, ROUTES_B));
      symlinkSync('..2026_b', join(vol, '..data_tmp'));
      renameSync(join(vol, '..data_tmp'), join(vol, '..data'));
      rmSync(join(vol, '..2026_a'), { recursive: true });
      await eventually(async () => (await status(`${url}/added/x`)) === 200);
      expect(logs.filter((l) => l.event === 'config_reloaded' && l.result === 'success')).toHaveLength(1);
    } finally {
      await app.stop(500);
    }
  });

  it('a request in flight during a reload finishes on the config it started with (its route and upstream)', async () => {
    // An upstream that answers after 600 ms; the reload removes the route and its upstream meanwhile.
    const slow: Server = createServer((req, res) => setTimeout(() => res.end(`slow:${req.url}`), 600));
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    const slowUrl = `http://127.0.0.1:${(slow.address() as { port: number }).port}`;
    try {
      h = await startHarness({
        routes: `${ROUTES_A}  - name: slow\n    match: { path: /slow/** }\n    upstream: slow\n    access: public\n`,
        upstreamExtra: `  slow:\n    url: ${slowUrl}\n`,
      });
      const file = join(h.dir, 'gateway.yaml');
      const text = readFileSync(file, 'utf8');
      const inFlight = fetch(`${h.url}/slow/one`);
      await new Promise((r) => setTimeout(r, 150));
      editorSave(file, text.replace(/ {2}- name: slow\n[\s\S]*$/, '').replace(`  slow:\n    url: ${slowUrl}\n`, ''));
      await eventually(async () => (await status(`${h!.url}/slow/two`)) === 404, 3000);
      const r = await inFlight;
      expect(r.status).toBe(200);
      expect(await r.text()).toBe('slow:/slow/one');
    } finally {
      slow.closeAllConnections();
      await new Promise((r) => slow.close(r));
    }
  });

  it('a request authorized before a reload that removes its upstream is forwarded there (not 502 upstream_unknown)', async () => {
    // Held between authentication and forwarding while the reload lands: the request must use
    // the forwarding engine of the config it was authorized under, not the new one.
    const held: Server = createServer((req, res) => res.end(`held:${req.url}`));
    await new Promise<void>((r) => held.listen(0, '127.0.0.1', r));
    const heldUrl = `http://127.0.0.1:${(held.address() as { port: number }).port}`;
    try {
      h = await startHarness({
        routes: `${ROUTES_A}  - name: held\n    match: { path: /held/** }\n    upstream: held\n    access: authenticated\n`,
        upstreamExtra: `  held:\n    url: ${heldUrl}\n`,
      });
      await addUser(h, 'rita');
      const token = await login(h, 'rita');
      const auth = h.app.auth;
      const verify = auth.verify.bind(auth);
      let entered!: () => void;
      const inVerify = new Promise<void>((r) => {
        entered = r;
      });
      let release!: () => void;
      const gate = new Promise<void>((r) => {
        release = r;
      });
      auth.verify = async (t: string) => {
        if (t === token) {
          entered();
          await gate;
        }
        return verify(t);
      };
      const inFlight = fetch(`${h.url}/held/one`, { headers: { authorization: `Bearer ${token}` } });
      await inVerify;
      const file = join(h.dir, 'gateway.yaml');
      const text = readFileSync(file, 'utf8');
      editorSave(file, text.replace(/ {2}- name: held\n[\s\S]*$/, '').replace(`  held:\n    url: ${heldUrl}\n`, ''));
      // Unauthenticated: 401 while the route exists, 404 once the reload has removed it.
      await eventually(async () => (await status(`${h!.url}/held/two`)) === 404, 3000);
      release();
      const r = await inFlight;
      expect(r.status).toBe(200);
      expect(await r.text()).toBe('held:/held/one');
    } finally {
      held.closeAllConnections();
      await new Promise((r) => held.close(r));
    }
  });
});
