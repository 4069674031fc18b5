import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EchoStats } from '../demo/echo.js';
import { send, startProxyHarness, waitFor, type ProxyHarness } from './test-support.js';

const MAX_SOCKETS = 10;
const REQUESTS = 300;

/** Stats straight from the echo server (not through the proxy). One connection of its own. */
async function stats(h: ProxyHarness): Promise<EchoStats> {
  return (await send(h.echo.url, { path: '/__echo/stats' })).json<EchoStats>();
}

describe('forward: client aborts release upstream requests (http-proxy PR #1559)', () => {
  let h: ProxyHarness;
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => {
    unhandled.push(e);
  };
  beforeAll(async () => {
    process.on('uncaughtException', onUnhandled);
    process.on('unhandledRejection', onUnhandled);
    h = await startProxyHarness({ echo: { max_sockets: MAX_SOCKETS, timeout: 30_000 } });
  });
  afterAll(async () => {
    process.off('uncaughtException', onUnhandled);
    process.off('unhandledRejection', onUnhandled);
    await h.close();
  });

  it(`${REQUESTS} aborted requests to a slow upstream free its connections within seconds`, async () => {
    const before = await stats(h);
    const clientAgent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
    const u = new URL(h.url);
    const reqs: http.ClientRequest[] = [];
    let responses = 0;
    for (let i = 0; i < REQUESTS; i++) {
      const req = http.request({ hostname: u.hostname, port: u.port, path: `/__echo/slow?ms=3000&i=${i}`, agent: clientAgent });
      req.on('error', () => undefined); // aborted on purpose
      req.on('response', () => responses++);
      req.end();
      reqs.push(req);
    }

    // Wait until the pool is saturated: max_sockets requests in flight at the upstream, the
    // rest queued in the agent.
    const busy = await waitFor(() => stats(h), (s) => s.inFlight >= MAX_SOCKETS + 1, 10_000);
    expect(busy.inFlight).toBe(MAX_SOCKETS + 1); // + the stats request itself
    const requestsBeforeAbort = busy.requests;
    await new Promise((r) => setTimeout(r, 200));

    const abortedAt = Date.now();
    for (const r of reqs) r.destroy();

    // The upstream sees its in-flight requests go away and is left with at most the idle pool.
    const settled = await waitFor(
      () => stats(h),
      (s) => s.inFlight === 1 && s.openConnections <= MAX_SOCKETS + 1,
      5_000,
    );
    const releaseMs = Date.now() - abortedAt;
    expect(settled.inFlight).toBe(1);
    expect(settled.openConnections).toBeLessThanOrEqual(MAX_SOCKETS + 1);
    expect(releaseMs).toBeLessThan(2_500); // well before the 3 s the upstream would have taken

    // Queued requests were dropped, not sent later: after the upstream's 3 s have passed,
    // it has still seen only the first batch (plus our own stats calls).
    await new Promise((r) => setTimeout(r, 3_300 - (Date.now() - abortedAt)));
    const later = await stats(h);
    const slowSeen = later.requests - before.requests;
    const statsCalls = 64; // generous allowance for the polling above
    expect(slowSeen).toBeLessThan(MAX_SOCKETS + statsCalls);
    expect(later.requests - requestsBeforeAbort).toBeLessThan(statsCalls);
    expect(later.inFlight).toBe(1);
    expect(later.openConnections).toBeLessThanOrEqual(MAX_SOCKETS + 1);
    expect(responses).toBe(0);

    // The gateway still works, and the aborts were not reported as upstream failures.
    const ok = await send(h.url, { path: '/after' });
    expect(ok.status).toBe(200);
    expect(ok.json().path).toBe('/after');
    expect(h.results.filter((r) => r.reason !== undefined)).toEqual([]);
    expect(unhandled).toEqual([]);
    clientAgent.destroy();
    console.log(
      `abort test: ${REQUESTS} requests, max_sockets ${MAX_SOCKETS}: in flight at upstream before abort ${busy.inFlight - 1}, ` +
        `released in ${releaseMs} ms; upstream open connections after: ${settled.openConnections - 1} (+1 stats); ` +
        `slow requests that reached the upstream in total: ${later.requests - before.requests} incl. stats polls`,
    );
  });

  it('an aborted download releases the upstream stream', async () => {
    const u = new URL(h.url);
    const before = await stats(h);
    await new Promise<void>((resolve) => {
      const req = http.request({ hostname: u.hostname, port: u.port, path: `/__echo/stream?bytes=${500 * 1024 * 1024}`, agent: false }, (res) => {
        let n = 0;
        res.on('data', (c: Buffer) => {
          n += c.length;
          if (n > 1024 * 1024) {
            req.destroy();
            resolve();
          }
        });
      });
      req.on('error', () => undefined);
      req.end();
    });
    const after = await waitFor(() => stats(h), (s) => s.inFlight === 1, 3_000);
    expect(after.inFlight).toBe(1);
    expect(after.openConnections).toBeLessThanOrEqual(Math.max(before.openConnections, MAX_SOCKETS + 1));
    expect(unhandled).toEqual([]);
  });
});
