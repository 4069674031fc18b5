import { describe, expect, it } from 'vitest';
import { Metrics } from './index.js';

/** The value of the series `name{labels}` (labels exactly as prom-client writes them), or undefined. */
async function value(m: Metrics, series: string): Promise<number | undefined> {
  const { body } = await m.render();
  const line = body.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const config = (routes: { name: string; rate_limit?: object }[], upstreams: string[]) => ({
  routes,
  upstreams: Object.fromEntries(upstreams.map((u) => [u, { url: `http://${u}` }])),
});

describe('Metrics', () => {
  it('build info carries the given version and this Node', async () => {
    const m = new Metrics({ processMetrics: false, version: '9.8.7' });
    expect(await value(m, `portcullis_build_info{version="9.8.7",node="${process.version}"}`)).toBe(1);
  });

  it('the reload gauges start from the load the gateway was built with', async () => {
    const at = new Date('2026-01-02T03:04:05.250Z');
    const m = new Metrics({ processMetrics: false, configLoadedAt: at });
    expect(await value(m, 'portcullis_config_last_reload_successful')).toBe(1);
    expect(await value(m, 'portcullis_config_last_reload_success_timestamp_seconds')).toBe(at.getTime() / 1000);
    expect(await value(m, 'portcullis_config_reloads_total{result="success"}')).toBe(0);
    expect(await value(m, 'portcullis_config_reloads_total{result="failure"}')).toBe(0);
  });

  it('configReloaded: a success moves the timestamp; a failure sets the gauge to 0 and keeps the timestamp', async () => {
    const m = new Metrics({ processMetrics: false, configLoadedAt: new Date(1_000_000) });
    m.configReloaded(true, new Date(2_000_000));
    expect(await value(m, 'portcullis_config_reloads_total{result="success"}')).toBe(1);
    expect(await value(m, 'portcullis_config_last_reload_success_timestamp_seconds')).toBe(2_000);
    m.configReloaded(false, new Date(3_000_000));
    expect(await value(m, 'portcullis_config_reloads_total{result="failure"}')).toBe(1);
    expect(await value(m, 'portcullis_config_last_reload_successful')).toBe(0);
    expect(await value(m, 'portcullis_config_last_reload_success_timestamp_seconds')).toBe(2_000);
    m.configReloaded(true, new Date(4_000_000));
    expect(await value(m, 'portcullis_config_last_reload_successful')).toBe(1);
    expect(await value(m, 'portcullis_config_reloads_total{result="success"}')).toBe(2);
  });

  it('prime exports each route × decision, upstream × reason and route limiter at 0, once, and keeps what an older config had', async () => {
    const m = new Metrics({ processMetrics: false });
    const first = config([{ name: 'r1' }, { name: 'r2', rate_limit: { requests: 1, per: 1 } }], ['u1']);
    m.prime(first);
    expect(await value(m, 'portcullis_auth_decisions_total{route="r1",decision="csrf"}')).toBe(0);
    expect(await value(m, 'portcullis_upstream_errors_total{upstream="u1",reason="timeout"}')).toBe(0);
    expect(await value(m, 'portcullis_rate_limited_total{limiter="route:r2"}')).toBe(0);
    expect(await value(m, 'portcullis_rate_limited_total{limiter="route:r1"}')).toBeUndefined();
    // Priming never resets a count.
    m.authDecisions.inc({ route: 'r1', decision: 'deny' });
    m.prime(first);
    m.prime(config([{ name: 'r1' }, { name: 'r3' }], ['u2']));
    expect(await value(m, 'portcullis_auth_decisions_total{route="r1",decision="deny"}')).toBe(1);
    expect(await value(m, 'portcullis_auth_decisions_total{route="r3",decision="allow"}')).toBe(0);
    expect(await value(m, 'portcullis_upstream_errors_total{upstream="u2",reason="refused"}')).toBe(0);
    expect(await value(m, 'portcullis_auth_decisions_total{route="r2",decision="allow"}')).toBe(0);
    expect(await value(m, 'portcullis_upstream_errors_total{upstream="u1",reason="refused"}')).toBe(0);
  });

  it('primeFrom: each render primes the config the source returns (nothing before there is one)', async () => {
    const m = new Metrics({ processMetrics: false });
    let current: ReturnType<typeof config> | undefined;
    m.primeFrom(() => current);
    expect(await value(m, 'portcullis_auth_decisions_total{route="a",decision="allow"}')).toBeUndefined();
    current = config([{ name: 'a' }], []);
    expect(await value(m, 'portcullis_auth_decisions_total{route="a",decision="allow"}')).toBe(0);
    current = config([{ name: 'b' }], []);
    expect(await value(m, 'portcullis_auth_decisions_total{route="b",decision="allow"}')).toBe(0);
    expect(await value(m, 'portcullis_auth_decisions_total{route="a",decision="allow"}')).toBe(0);
  });

  it('process metrics keep their standard names', async () => {
    const { body } = await new Metrics().render();
    expect(body).toMatch(/^process_cpu_seconds_total /m);
    expect(body).toMatch(/^nodejs_heap_size_used_bytes /m);
    expect(body).not.toMatch(/^portcullis_(process|nodejs)_/m);
  });
});
