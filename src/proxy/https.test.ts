import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send, startProxyHarness, type ProxyHarness } from '../../test/support/proxy.js';
import { selfSigned } from '../../test/support/services.js';

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(!hasOpenssl())('forward: https upstreams', () => {
  let dir: string;
  let upstream: https.Server;
  let h: ProxyHarness;
  const sni: string[] = [];
  beforeAll(async () => {
    const tls = selfSigned({ host: 'localhost' });
    dir = tls.dir;
    upstream = https.createServer(
      {
        key: readFileSync(tls.key),
        cert: readFileSync(tls.cert),
        SNICallback: (name, cb) => {
          sni.push(name);
          cb(null, undefined); // the default context
        },
      },
      (_req, res) => res.end('tls ok'),
    );
    upstream.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const { port } = upstream.address() as AddressInfo;
    h = await startProxyHarness({ upstreams: { secure: { url: `https://localhost:${port}` } } });
    h.target = () => ({ upstream: 'secure' });
  });
  afterAll(async () => {
    await h.close();
    upstream.closeAllConnections();
    await new Promise<void>((r) => upstream.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('verifies the certificate (a self-signed one is refused: 502, reason refused) using the upstream host for SNI, not the client Host', async () => {
    const res = await send(h.url, { headers: { Host: 'gw.example.com' } });
    expect(res.status).toBe(502);
    expect(res.json<{ code: string }>().code).toBe('upstream_unavailable');
    expect(h.results).toEqual([{ upstream: 'secure', status: null, reason: 'refused', durationSeconds: expect.any(Number) }]);
    const log = h.logs.find((l) => l.obj.event === 'upstream_error');
    expect(String(log?.obj.cause_code)).toMatch(/SELF_SIGNED|CERT/);
    // SNI names the upstream host, not the Host header the client sent.
    expect(sni).toEqual(['localhost']);
  });
});
