import type { Logger } from 'pino';
import { timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Metrics } from '../metrics/index.js';

/** A dependency the readiness check pings. */
export interface Dependency {
  name: 'database' | 'state_store';
  ping: () => Promise<void>;
}

const PING_TIMEOUT_MS = 1500;

function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<void>((_, reject) => (t = setTimeout(() => reject(new Error('timed out')), ms)))]).finally(() => clearTimeout(t));
}

/**
 * Checks every dependency (bounded by a timeout so /readyz answers fast during an outage)
 * and records `portcullis_dependency_up`.
 */
export async function checkDependencies(deps: readonly Dependency[], metrics: Metrics): Promise<Record<string, { up: boolean; error?: string }>> {
  const out: Record<string, { up: boolean; error?: string }> = {};
  await Promise.all(
    deps.map(async (dep) => {
      try {
        await withTimeout(dep.ping(), PING_TIMEOUT_MS);
        out[dep.name] = { up: true };
        metrics.dependencyUp.set({ dependency: dep.name }, 1);
      } catch (e) {
        out[dep.name] = { up: false, error: (e as Error).message };
        metrics.dependencyUp.set({ dependency: dep.name }, 0);
      }
    }),
  );
  return out;
}

/** The admin listener: `/metrics`, `/healthz` (alive), `/readyz` (config loaded, dependencies reachable). */
export function createAdminServer(opts: {
  metrics: Metrics;
  dependencies: () => readonly Dependency[];
  ready: () => boolean;
  /** `POST /unlock {username}` for `portcullis user unlock` when lockout state is in process. */
  unlock?: { token: string; run: (username: string) => Promise<boolean> };
  /** Where a failure of the listener's own (a 5xx it answers) is logged, with its stack. */
  log?: Pick<Logger, 'error'>;
}): Server {
  /** The admin listener answers in its own small JSON, but a 5xx of its own still leaves a line. */
  const failed = (what: string, e: unknown): void => {
    const err = e instanceof Error ? e : new Error(String(e));
    opts.log?.error({ event: 'admin_error', what, err: err.message, stack: err.stack }, `admin listener: ${what} failed`);
  };
  return createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(text);
    };
    if (path === '/unlock' && req.method === 'POST' && opts.unlock) {
      const unlock = opts.unlock;
      // Only a holder of the token file in the data directory (the CLI on this host) may unlock.
      const given = Buffer.from(req.headers.authorization ?? '');
      const want = Buffer.from(`Bearer ${unlock.token}`);
      if (given.length !== want.length || !timingSafeEqual(given, want)) return send(401, { status: 'unauthorized' });
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => {
        body += c;
        if (body.length > 1024) req.destroy();
      });
      req.on('end', () => {
        let username: unknown;
        try {
          username = (JSON.parse(body) as { username?: unknown }).username;
        } catch {
          return send(400, { status: 'bad_request' });
        }
        if (typeof username !== 'string') return send(400, { status: 'bad_request' });
        unlock.run(username).then(
          (wasLocked) => send(200, { status: 'ok', was_locked: wasLocked }),
          (e: unknown) => {
            failed('unlock', e);
            send(503, { status: 'unavailable' });
          },
        );
      });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, { status: 'method_not_allowed' });
    if (path === '/healthz') return send(200, { status: 'ok' });
    if (path === '/readyz') {
      checkDependencies(opts.dependencies(), opts.metrics)
        .then((deps) => {
          const ready = opts.ready() && Object.values(deps).every((x) => x.up);
          send(ready ? 200 : 503, { status: ready ? 'ready' : 'not_ready', config_loaded: opts.ready(), dependencies: deps });
        })
        .catch(() => send(503, { status: 'not_ready' }));
      return;
    }
    if (path === '/metrics') {
      checkDependencies(opts.dependencies(), opts.metrics)
        .then(() => opts.metrics.render())
        .then(({ contentType, body }) => {
          res.writeHead(200, { 'content-type': contentType });
          res.end(body);
        })
        .catch((e: unknown) => {
          failed('metrics', e);
          send(500, { status: 'error' });
        });
      return;
    }
    send(404, { status: 'not_found' });
  });
}
