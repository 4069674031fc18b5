import { describe, expect, it } from 'vitest';
import { clientIpFrom, createIpMatcher, normalizeIp, parseCidr, parseIp } from './ip.js';

const bytes = (s: string) => Array.from(parseIp(s)?.bytes ?? []);

describe('parseIp', () => {
  it('parses IPv4 strictly', () => {
    expect(parseIp('10.1.2.3')).toEqual({ family: 4, bytes: new Uint8Array([10, 1, 2, 3]) });
    for (const bad of ['10.1.2', '10.1.2.3.4', '256.1.1.1', '010.1.1.1', '1.2.3.-1', '', 'a.b.c.d', '1.2.3.4 ']) expect(parseIp(bad), bad).toBeNull();
  });

  it('parses IPv6 forms: full, ::, embedded IPv4, brackets, zone', () => {
    expect(bytes('::1')).toEqual([...new Array(15).fill(0), 1]);
    expect(bytes('2001:db8::8:800:200c:417a')).toEqual([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 8, 8, 0, 0x20, 0x0c, 0x41, 0x7a]);
    expect(bytes('1:2:3:4:5:6:7:8')).toEqual([0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8]);
    expect(bytes('[fe80::1%eth0]')).toEqual([0xfe, 0x80, ...new Array(13).fill(0), 1]);
    expect(bytes('64:ff9b::192.0.2.33').slice(12)).toEqual([192, 0, 2, 33]);
    expect(parseIp('::')?.family).toBe(6);
    for (const bad of ['1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', ':1', '1:', 'g::1', '1:2:3:4:5:6:7', '::1.2.3', '[::1']) expect(parseIp(bad), bad).toBeNull();
  });

  it('treats IPv4-mapped IPv6 as the IPv4 address', () => {
    expect(parseIp('::ffff:10.1.2.3')).toEqual({ family: 4, bytes: new Uint8Array([10, 1, 2, 3]) });
    expect(parseIp('::ffff:a01:203')).toEqual({ family: 4, bytes: new Uint8Array([10, 1, 2, 3]) });
    expect(normalizeIp('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(normalizeIp('::1')).toBe('::1');
    expect(normalizeIp('not-an-ip')).toBe('not-an-ip');
  });
});

describe('createIpMatcher', () => {
  it('matches IPv4 ranges, including mapped peers', () => {
    const m = createIpMatcher(['10.0.0.0/8', '192.168.1.7', '172.16.0.0/12']);
    expect(m('10.255.0.1')).toBe(true);
    expect(m('::ffff:10.0.0.1')).toBe(true);
    expect(m('11.0.0.1')).toBe(false);
    expect(m('192.168.1.7')).toBe(true);
    expect(m('192.168.1.8')).toBe(false);
    expect(m('172.31.255.255')).toBe(true);
    expect(m('172.32.0.0')).toBe(false);
    expect(m(undefined)).toBe(false);
    expect(m('')).toBe(false);
    expect(m('garbage')).toBe(false);
  });

  it('matches IPv6 ranges with odd prefixes, and never across families', () => {
    const m = createIpMatcher(['2001:db8::/33', '::1']);
    expect(m('2001:db8:7fff::1')).toBe(true);
    expect(m('2001:db8:8000::1')).toBe(false);
    expect(m('::1')).toBe(true);
    expect(m('127.0.0.1')).toBe(false);
    expect(createIpMatcher(['10.0.0.0/8'])('::a00:1')).toBe(false); // IPv4-compatible, not mapped
  });

  it('accepts mapped ranges and host bits, /0 matches its family only', () => {
    expect(createIpMatcher(['::ffff:10.0.0.0/104'])('10.9.9.9')).toBe(true);
    expect(createIpMatcher(['10.1.2.3/8'])('10.200.0.1')).toBe(true);
    expect(createIpMatcher(['0.0.0.0/0'])('8.8.8.8')).toBe(true);
    expect(createIpMatcher(['0.0.0.0/0'])('2001:db8::1')).toBe(false);
    expect(createIpMatcher(['::/0'])('2001:db8::1')).toBe(true);
    expect(createIpMatcher([])('10.0.0.1')).toBe(false);
  });

  it('rejects invalid entries', () => {
    for (const bad of ['10.0.0.0/33', '::/129', '10.0.0/8', 'localhost', '10.0.0.0/', '10.0.0.0/-1']) expect(() => parseCidr(bad), bad).toThrow();
    expect(() => createIpMatcher(['10.0.0.0/8', 'nope'])).toThrow(/nope/);
  });
});

describe('clientIpFrom', () => {
  const req = (peer: string, xff?: string | string[]) => ({ socket: { remoteAddress: peer }, headers: { 'x-forwarded-for': xff } });
  const trust = ['10.0.0.0/8', '::1'];

  it('uses the peer when it is not trusted (spoofed X-Forwarded-For ignored)', () => {
    expect(clientIpFrom(req('203.0.113.9', '1.1.1.1'), trust)).toBe('203.0.113.9');
    expect(clientIpFrom(req('::ffff:203.0.113.9', '1.1.1.1'), trust)).toBe('203.0.113.9');
  });

  it('walks X-Forwarded-For from the right past trusted proxies', () => {
    expect(clientIpFrom(req('10.0.0.1', '6.6.6.6, 198.51.100.4, 10.0.0.2'), trust)).toBe('198.51.100.4');
    expect(clientIpFrom(req('::1', ['6.6.6.6', '198.51.100.4']), trust)).toBe('198.51.100.4');
    expect(clientIpFrom(req('10.0.0.1', '198.51.100.4:5555'), trust)).toBe('198.51.100.4');
    expect(clientIpFrom(req('10.0.0.1', '[2001:db8::5]:443'), trust)).toBe('2001:db8::5');
  });

  it('stops at a malformed entry and falls back sensibly', () => {
    expect(clientIpFrom(req('10.0.0.1', 'garbage, 10.0.0.7'), trust)).toBe('10.0.0.7');
    expect(clientIpFrom(req('10.0.0.1'), trust)).toBe('10.0.0.1');
    expect(clientIpFrom(req('10.0.0.1', '10.0.0.3'), trust)).toBe('10.0.0.3');
  });
});
