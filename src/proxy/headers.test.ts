import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { deleteRequestHeaders, filterCookieHeader, headerSafe, setRequestHeader } from './headers.js';
import { problemBody, writeProblem } from './problem.js';
import { GatewayError, Errors } from '../errors/index.js';

describe('filterCookieHeader', () => {
  const drop = new Set(['sid', '__Host-pc']);
  it('removes only the named cookies, keeping order and spelling', () => {
    expect(filterCookieHeader('a=1; sid=x; b="q"; __Host-pc=t;c=3', drop)).toBe('a=1; b="q"; c=3');
    expect(filterCookieHeader('a=1;  sid=x ;b=2', drop)).toBe('a=1; b=2');
    expect(filterCookieHeader('SID=keep; sid=x', drop)).toBe('SID=keep');
    expect(filterCookieHeader('sid=x; __Host-pc=y', drop)).toBe('');
    expect(filterCookieHeader('flag', drop)).toBe('flag');
  });
});

describe('headerSafe', () => {
  it('passes visible ASCII through and percent-encodes the rest', () => {
    expect(headerSafe('alice@example.com')).toBe('alice@example.com');
    expect(headerSafe('a\r\nb')).toBe('a%0D%0Ab');
    expect(headerSafe('zoë')).toBe('zo%C3%AB');
    expect(headerSafe('a\u0000b')).toBe('a%00b');
  });
});

describe('request header edits on a real IncomingMessage', () => {
  it('keeps headers, headersDistinct and rawHeaders consistent, even before Node computed them', async () => {
    let seen: { headers: http.IncomingHttpHeaders; raw: string[]; distinct: NodeJS.Dict<string[]> } | undefined;
    const server = http.createServer((req, res) => {
      // Nothing has read req.headers yet: the first edit must not break Node's lazy getters.
      deleteRequestHeaders(req, (n) => n === 'x-drop');
      setRequestHeader(req, 'X-Set', 'v');
      seen = { headers: { ...req.headers }, raw: [...req.rawHeaders], distinct: { ...req.headersDistinct } };
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve, reject) => {
      const req = http.request(
        {
          port,
          host: '127.0.0.1',
          agent: false,
          headers: ['Host', 'x', 'X-Drop', '1', 'x-drop', '2', 'X-Set', 'old', 'X-Keep', 'k'] as unknown as http.OutgoingHttpHeaders,
        },
        (res) => {
          res.resume();
          res.on('end', resolve);
        },
      );
      req.on('error', reject);
      req.end();
    });
    server.close();
    expect(seen?.headers['x-drop']).toBeUndefined();
    expect(seen?.headers['x-set']).toBe('v');
    expect(seen?.headers['x-keep']).toBe('k');
    expect(seen?.raw).toEqual(['Host', 'x', 'X-Keep', 'k', 'Connection', 'close', 'X-Set', 'v']);
    expect(seen?.distinct['x-set']).toEqual(['v']);
    expect(seen?.distinct['x-drop']).toBeUndefined();
  });
});

describe('writeProblem', () => {
  it('builds RFC 9457 bodies whose fixed members cannot be overridden by extra', () => {
    const e = new GatewayError(Errors.upstream_timeout, 'slow', { extra: { code: 'spoof', hint: 1 } });
    expect(problemBody(e)).toEqual({
      hint: 1,
      type: 'https://portcullis.dev/problems/upstream-timeout',
      title: 'Upstream timed out',
      status: 504,
      detail: 'slow',
      code: 'upstream_timeout',
    });
  });

  it('destroys a response whose headers were already sent', () => {
    let destroyed = false;
    const res = { destroyed: false, writableEnded: false, headersSent: true, destroy: () => (destroyed = true) } as unknown as http.ServerResponse;
    writeProblem(res, new GatewayError(Errors.upstream_unavailable));
    expect(destroyed).toBe(true);
  });
});
