import type { IncomingMessage } from 'node:http';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { RequestRecord, attachRecord, loggablePath, loggedPathOf, recordOf, validRequestId, watchSocketStatus } from './access-log.js';
import { createHeaderMutator } from './mutate.js';

const NAMES = { user: 'X-Auth-User', user_id: 'X-Auth-User-Id', email: 'X-Auth-Email', roles: 'X-Auth-Roles' };

/** Just enough of a request for the mutate stage. */
function fakeRequest(peer: string, raw: string[]): IncomingMessage {
  const headers: Record<string, string> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i].toLowerCase();
    headers[k] = headers[k] === undefined ? raw[i + 1] : `${headers[k]}, ${raw[i + 1]}`;
  }
  return { headers, rawHeaders: raw, socket: { remoteAddress: peer } } as unknown as IncomingMessage;
}

describe('request ids', () => {
  it('validRequestId: 1–128 log- and header-safe characters', () => {
    for (const ok of ['a', 'f47ac10b-58cc-4372-a567-0e02b2c3d479', 'Root=1-5e1b4151:x.y_z+/=', 'x'.repeat(128)]) expect(validRequestId(ok), ok).toBe(true);
    for (const bad of ['', 'x'.repeat(129), 'a b', 'a,b', 'one, two', 'a"b', 'a\nb', 'é', '<script>']) expect(validRequestId(bad), bad).toBe(false);
  });

  it("the mutate stage takes a trusted peer's valid id, makes a new one otherwise, and sends exactly one copy upstream", () => {
    const m = createHeaderMutator({ identityHeaders: NAMES, upstreams: {}, trustProxy: ['10.0.0.0/8'] });
    const plan = (requestId: string) => ({ upstream: 'u', identity: null, gatewayCookieNames: [], stripBearer: false, proto: 'http' as const, requestId });
    const trusted = fakeRequest('10.1.2.3', ['Host', 'gw', 'X-Request-Id', 'edge-1', 'x_request_id', 'other']);
    expect(m.requestId(trusted)).toBe('edge-1');
    const out = m.headersFor(trusted, plan('edge-1'));
    const sent: [string, string][] = [];
    for (let i = 0; i < out.length; i += 2) if (out[i].toLowerCase().replace(/_/g, '-') === 'x-request-id') sent.push([out[i], out[i + 1]]);
    expect(sent).toEqual([['X-Request-Id', 'edge-1']]);
    const untrusted = fakeRequest('192.0.2.7', ['Host', 'gw', 'X-Request-Id', 'chosen-by-client']);
    const id = m.requestId(untrusted);
    expect(id).not.toBe('chosen-by-client');
    expect(validRequestId(id)).toBe(true);
    expect(m.requestId(fakeRequest('10.1.2.3', ['X-Request-Id', 'bad value']))).not.toBe('bad value');
    expect(m.requestId(fakeRequest('10.1.2.3', []))).not.toBe(m.requestId(fakeRequest('10.1.2.3', [])));
  });
});

describe('loggablePath', () => {
  it('keeps the path, drops what may carry a secret', () => {
    expect(loggablePath('/a/b?token=x')).toBe('/a/b');
    expect(loggablePath('/a;jsessionid=1/b')).toBe('/a');
    expect(loggablePath('/a%3Bsid=1')).toBe('/a');
    expect(loggablePath('/a#frag')).toBe('/a');
    expect(loggablePath('http://user:pass@host:80/p?q')).toBe('/p');
    expect(loggablePath('garbage')).toBe('');
    expect(loggablePath(`/${'x'.repeat(2000)}`)).toHaveLength(1024);
  });

  it('loggedPathOf prefers the normalized path the pipeline recorded', () => {
    const req = { url: '/public/../app/x?q=1' } as IncomingMessage;
    expect(loggedPathOf(req, undefined)).toBe('/public/../app/x');
    const rec = new RequestRecord('id', 0n);
    attachRecord(req, rec);
    expect(recordOf(req)).toBe(rec);
    rec.path = '/app/x';
    expect(loggedPathOf(req, recordOf(req))).toBe('/app/x');
  });
});

describe('watchSocketStatus', () => {
  it('reads the status line of the first write, whoever writes it, then steps aside', () => {
    const s = new PassThrough();
    const { write, end } = s;
    const rec = new RequestRecord('id', 0n);
    watchSocketStatus(s, rec);
    s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n');
    expect(rec.socketStatus).toBe(101);
    expect(s.write).toBe(write);
    expect(s.end).toBe(end);
    expect(String(s.read())).toMatch(/^HTTP\/1\.1 101/);
  });

  it('an answer written with end(), as a Buffer', () => {
    const s = new PassThrough();
    const rec = new RequestRecord('id', 0n);
    watchSocketStatus(s, rec);
    s.end(Buffer.from('HTTP/1.1 401 Unauthorized\r\n\r\n'));
    expect(rec.socketStatus).toBe(401);
  });

  it('bytes that are not a status line leave it unknown', () => {
    const s = new PassThrough();
    const rec = new RequestRecord('id', 0n);
    watchSocketStatus(s, rec);
    s.write(Buffer.from([0x81, 0x01, 0x61]));
    expect(rec.socketStatus).toBeNull();
  });
});
