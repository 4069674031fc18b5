/**
 * A small IPv4/IPv6 address and CIDR matcher for `trust_proxy`.
 *
 * IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`, what a dual-stack listener reports for an
 * IPv4 peer) are treated as the IPv4 address they carry, both as peers and in ranges.
 */

/** A parsed address: 4 bytes (IPv4) or 16 bytes (IPv6). */
export interface ParsedIp {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
}

function parseIpv4(s: string): Uint8Array | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i];
    // No leading zeros: "010" is octal to some parsers and decimal to others.
    if (!/^(0|[1-9]\d{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

function parseIpv6(input: string): Uint8Array | null {
  let s = input;
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone !== -1) s = s.slice(0, zone);
  if (s.length === 0 || !/^[0-9a-fA-F:.]+$/.test(s)) return null;

  // An embedded IPv4 tail ("::ffff:1.2.3.4") becomes two hextets.
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(':');
  if (s.indexOf('.') !== -1) {
    const v4 = parseIpv4(s.slice(lastColon + 1));
    if (!v4 || lastColon === -1) return null;
    tail = [(v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]];
    s = s.slice(0, lastColon + 1);
    // Keep "::" intact when the tail followed it; otherwise drop the separator.
    if (!s.endsWith('::')) s = s.slice(0, -1);
  }

  const halves = s.split('::');
  if (halves.length > 2) return null;
  const parseGroups = (h: string): number[] | null => {
    if (h === '') return [];
    const out: number[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = parseGroups(halves[0]);
  const rest = halves.length === 2 ? parseGroups(halves[1]) : [];
  if (!head || !rest) return null;
  const given = head.length + rest.length + tail.length;
  let groups: number[];
  if (halves.length === 2) {
    if (given > 7) return null;
    groups = [...head, ...new Array<number>(8 - given).fill(0), ...rest, ...tail];
  } else {
    if (given !== 8) return null;
    groups = [...head, ...tail];
  }
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  return out;
}

function isMapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * Parses an IPv4 or IPv6 address (IPv6 may carry brackets or a `%zone`). IPv4-mapped IPv6
 * addresses come back as IPv4. Returns null when `s` is not an address.
 */
export function parseIp(s: string): ParsedIp | null {
  const v4 = parseIpv4(s);
  if (v4) return { family: 4, bytes: v4 };
  const v6 = parseIpv6(s);
  if (!v6) return null;
  if (isMapped(v6)) return { family: 4, bytes: v6.slice(12) };
  return { family: 6, bytes: v6 };
}

/**
 * The canonical text of an address for headers: IPv4-mapped IPv6 becomes dotted IPv4, the
 * rest is returned as given. Non-addresses are returned unchanged.
 */
export function normalizeIp(s: string): string {
  const p = parseIp(s);
  if (p && p.family === 4) return Array.from(p.bytes).join('.');
  return s;
}

interface Range {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
  readonly prefix: number;
}

/**
 * Parses `addr` or `addr/prefix`. An IPv4-mapped IPv6 range with a prefix of at least 96
 * becomes the equivalent IPv4 range. Throws on anything else.
 */
export function parseCidr(s: string): Range {
  const slash = s.indexOf('/');
  const addr = slash === -1 ? s : s.slice(0, slash);
  const raw4 = parseIpv4(addr);
  const raw6 = raw4 ? null : parseIpv6(addr);
  if (!raw4 && !raw6) throw new Error(`not an IP address or CIDR range: "${s}"`);
  const max = raw4 ? 32 : 128;
  let prefix = max;
  if (slash !== -1) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) throw new Error(`bad prefix length in "${s}" (0..${max})`);
    prefix = Number(p);
  }
  if (raw6 && isMapped(raw6) && prefix >= 96) return { family: 4, bytes: raw6.slice(12), prefix: prefix - 96 };
  return raw4 ? { family: 4, bytes: raw4, prefix } : { family: 6, bytes: raw6 as Uint8Array, prefix };
}

function inRange(ip: ParsedIp, r: Range): boolean {
  if (ip.family !== r.family) return false;
  const full = r.prefix >> 3;
  for (let i = 0; i < full; i++) if (ip.bytes[i] !== r.bytes[i]) return false;
  const bits = r.prefix & 7;
  if (bits === 0) return true;
  const mask = (0xff << (8 - bits)) & 0xff;
  return (ip.bytes[full] & mask) === (r.bytes[full] & mask);
}

/**
 * Compiles a list of addresses/CIDR ranges (IPv4 and IPv6) into a predicate. Throws on an
 * invalid entry. An unparseable or empty address never matches.
 *
 * @example createIpMatcher(['10.0.0.0/8', '::1'])('::ffff:10.1.2.3') // true
 */
export function createIpMatcher(cidrs: readonly string[]): (ip: string | undefined) => boolean {
  const ranges = cidrs.map(parseCidr);
  if (ranges.length === 0) return () => false;
  return (ip) => {
    if (!ip) return false;
    const p = parseIp(ip);
    if (!p) return false;
    for (const r of ranges) if (inRange(p, r)) return true;
    return false;
  };
}

/** An address from a forwarding header entry: bare, `v4:port`, `[v6]` or `[v6]:port`. */
function cleanForwarded(entry: string): string | null {
  let s = entry.trim();
  if (s.startsWith('"') && s.endsWith('"')) s = s.slice(1, -1);
  if (parseIp(s)) return s;
  const bracket = /^\[([^\]]+)\](?::\d+)?$/.exec(s);
  if (bracket && parseIp(bracket[1])) return bracket[1];
  const v4port = /^([\d.]+):\d+$/.exec(s);
  if (v4port && parseIp(v4port[1])) return v4port[1];
  return null;
}

const matcherCache = new WeakMap<readonly string[], (ip: string | undefined) => boolean>();

/**
 * The client address of a request under `trust_proxy`: the direct peer, unless it is a
 * trusted proxy, in which case `X-Forwarded-For` is walked from the right, skipping trusted
 * addresses; the first untrusted one is the client. A malformed entry stops the walk (nothing
 * left of it can be believed) and the last address believed is returned. IPv4-mapped IPv6
 * comes back as IPv4. Read it before `forward()` rewrites `X-Forwarded-For` (the answer is
 * the same afterwards, as only trusted hops are appended).
 *
 * Compiled matchers are cached per `trustProxy` array (config arrays are frozen and stable).
 */
export function clientIpFrom(
  req: { socket?: { remoteAddress?: string } | null; headers: Record<string, string | string[] | undefined> },
  trustProxy: readonly string[],
): string {
  let trusted = matcherCache.get(trustProxy);
  if (!trusted) {
    trusted = createIpMatcher(trustProxy);
    matcherCache.set(trustProxy, trusted);
  }
  const peer = normalizeIp(req.socket?.remoteAddress ?? '');
  if (!trusted(peer)) return peer;
  const raw = req.headers['x-forwarded-for'];
  const chain = (Array.isArray(raw) ? raw.join(',') : (raw ?? '')).split(',').filter((e) => e.trim() !== '');
  let last = peer;
  for (let i = chain.length - 1; i >= 0; i--) {
    const ip = cleanForwarded(chain[i]);
    if (ip === null) return last;
    const n = normalizeIp(ip);
    if (!trusted(n)) return n;
    last = n;
  }
  return last;
}
