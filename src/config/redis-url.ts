/**
 * `storage.redis_url`, parsed without loading ioredis (the config loader and `config check` use
 * it; `store/state/redis.ts` turns the result into ioredis options). The accepted forms:
 *
 *   redis://[[user]:password@]host[:port][/db]        one server (ioredis parses it)
 *   rediss://…                                        the same over TLS
 *   /path/to/redis.sock                               a Unix socket (ioredis parses it)
 *   redis+sentinel://[[user]:password@]host[:port][,host[:port]]…/<master-name>[/db]
 *       [?sentinel_username=U&sentinel_password=P]    Redis Sentinel (default port 26379)
 *   rediss+sentinel://…                               Sentinel with TLS to the Sentinels and the servers
 *
 * In the Sentinel form the user info authenticates to the Redis servers (master and replicas);
 * `sentinel_username` / `sentinel_password` authenticate to the Sentinels themselves when they
 * require it. Messages never repeat a password.
 */

/** One Sentinel (or server) address. */
export interface RedisHost {
  host: string;
  port: number;
}

/** A `redis://`, `rediss://` or Unix-socket URL: handed to ioredis unchanged. */
export interface StandaloneRedisTarget {
  kind: 'standalone';
  url: string;
  /** `host:port` or the socket path, for logs (never the password). */
  display: string;
}

/** A `redis+sentinel://` or `rediss+sentinel://` URL. */
export interface SentinelRedisTarget {
  kind: 'sentinel';
  sentinels: RedisHost[];
  /** The master group name the Sentinels monitor. */
  name: string;
  /** TLS to the Sentinels and to the Redis servers (`rediss+sentinel://`). */
  tls: boolean;
  username?: string;
  password?: string;
  db: number;
  sentinelUsername?: string;
  sentinelPassword?: string;
  /** `Sentinel h1:26379,h2:26379 (master "name")`, for logs (never a password). */
  display: string;
}

export type RedisTarget = StandaloneRedisTarget | SentinelRedisTarget;

/** The default Sentinel port. */
export const SENTINEL_PORT = 26379;

const SENTINEL_FORM = 'redis+sentinel://host:26379[,host2:26379…]/<master-name>';
const SENTINEL_QUERY_KEYS = ['sentinel_username', 'sentinel_password'] as const;
/** Hostnames (RFC 1123 labels; `_` too, as container service names use it) or IPv4 addresses. */
const HOSTNAME = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;
const MASTER_NAME = /^[A-Za-z0-9._-]+$/;

/** A malformed `storage.redis_url`; the message is fit for `file:line: storage.redis_url: message`. */
export class RedisUrlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RedisUrlError';
  }
}

/** The problem with `url` as a `storage.redis_url`, or undefined when it is usable (empty means in-process state). */
export function redisUrlProblem(url: string): string | undefined {
  if (url === '') return undefined;
  try {
    parseRedisUrl(url);
    return undefined;
  } catch (e) {
    if (e instanceof RedisUrlError) return e.message;
    throw e;
  }
}

/** Parses a non-empty `storage.redis_url`; throws {@link RedisUrlError} naming what is wrong. */
export function parseRedisUrl(url: string): RedisTarget {
  if (url.trim() === '') throw new RedisUrlError('empty Redis URL (leave redis_url out, or empty, for in-process state)');
  if (url !== url.trim() || /\s/.test(url)) throw new RedisUrlError('contains whitespace');
  if (url.startsWith('/')) return { kind: 'standalone', url, display: url.split('?')[0] };
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(url)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    throw new RedisUrlError(`not a Redis URL: use redis://host:6379, rediss://host:6379 (TLS) or ${SENTINEL_FORM}`);
  }
  if (scheme === 'redis' || scheme === 'rediss') return parseStandalone(url);
  if (scheme === 'redis+sentinel' || scheme === 'rediss+sentinel') return parseSentinel(url.slice(scheme.length + 3), scheme === 'rediss+sentinel');
  throw new RedisUrlError(`unsupported scheme "${scheme}://": use redis://, rediss:// (TLS), redis+sentinel:// or rediss+sentinel:// (Sentinel)`);
}

function parseStandalone(url: string): StandaloneRedisTarget {
  const authority = url.slice(url.indexOf('://') + 3).split(/[/?#]/)[0];
  if (authority.slice(authority.lastIndexOf('@') + 1).includes(',')) throw new RedisUrlError(`a list of hosts needs Redis Sentinel: ${SENTINEL_FORM}`);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new RedisUrlError('not a valid URL (a bad port, or a password with reserved characters that are not percent-encoded?)');
  }
  if (u.hostname === '') throw new RedisUrlError('no host: use redis://host:6379');
  if (u.port === '0') throw new RedisUrlError('port 0 is not a valid port (1-65535)');
  if (u.pathname !== '' && u.pathname !== '/' && !/^\/\d{1,9}$/.test(u.pathname)) {
    throw new RedisUrlError('the path must be a database number (redis://host:6379/0) or nothing');
  }
  if (u.hash !== '') throw new RedisUrlError('a Redis URL has no #fragment');
  decodeUserInfo(u.username, u.password);
  return { kind: 'standalone', url, display: `${u.hostname}:${u.port || '6379'}` };
}

/** `rest` is what follows `scheme://`. */
function parseSentinel(rest: string, tls: boolean): SentinelRedisTarget {
  if (rest.includes('#')) throw new RedisUrlError('a Redis URL has no #fragment (percent-encode a "#" in a password as %23)');
  const q = rest.indexOf('?');
  const query = q === -1 ? undefined : rest.slice(q + 1);
  const beforeQuery = q === -1 ? rest : rest.slice(0, q);
  const slash = beforeQuery.indexOf('/');
  const authority = slash === -1 ? beforeQuery : beforeQuery.slice(0, slash);
  const path = slash === -1 ? '' : beforeQuery.slice(slash + 1);

  const at = authority.lastIndexOf('@');
  const hostList = at === -1 ? authority : authority.slice(at + 1);
  let username: string | undefined;
  let password: string | undefined;
  if (at !== -1) {
    const info = authority.slice(0, at);
    const colon = info.indexOf(':');
    if (colon === -1) throw new RedisUrlError('user info without a password: write :PASSWORD@ or USER:PASSWORD@ before the hosts');
    ({ username, password } = decodeUserInfo(info.slice(0, colon), info.slice(colon + 1)));
  }

  if (hostList === '') throw new RedisUrlError(`no Sentinel hosts: ${SENTINEL_FORM}`);
  const sentinels = hostList.split(',').map((entry, i) => parseHostPort(entry, i + 1));
  const seen = new Set<string>();
  for (const s of sentinels) {
    const key = `${s.host.toLowerCase()}:${s.port}`;
    if (seen.has(key)) throw new RedisUrlError(`Sentinel ${formatHost(s)} is listed twice`);
    seen.add(key);
  }

  const segments = path === '' ? [] : path.split('/');
  if (segments.length > 0 && segments[segments.length - 1] === '' && segments.length > 1) segments.pop();
  const name = segments[0] ?? '';
  if (name === '') throw new RedisUrlError(`no master name: the path names the master group the Sentinels monitor (${SENTINEL_FORM})`);
  if (!MASTER_NAME.test(name)) throw new RedisUrlError('the master name may hold only letters, digits, ".", "_" and "-"');
  let db = 0;
  if (segments.length > 1) {
    if (!/^\d{1,9}$/.test(segments[1])) throw new RedisUrlError(`the database number after the master name must be a non-negative integer (…/${name}/0)`);
    db = Number(segments[1]);
  }
  if (segments.length > 2) throw new RedisUrlError(`the path is /<master-name>[/<db>]; found more segments after /${name}/${segments[1]}`);

  const out: SentinelRedisTarget = {
    kind: 'sentinel',
    sentinels,
    name,
    tls,
    db,
    display: `Sentinel ${sentinels.map(formatHost).join(',')} (master "${name}")`,
  };
  if (username !== undefined) out.username = username;
  if (password !== undefined) out.password = password;
  if (query !== undefined) applySentinelQuery(query, out);
  return out;
}

function applySentinelQuery(query: string, out: SentinelRedisTarget): void {
  const seen = new Set<string>();
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = eq === -1 ? part : part.slice(0, eq);
    const value = eq === -1 ? '' : decode(part.slice(eq + 1), key);
    if (!(SENTINEL_QUERY_KEYS as readonly string[]).includes(key)) {
      throw new RedisUrlError(`unknown parameter "${decode(key, 'a parameter name')}" (known: ${SENTINEL_QUERY_KEYS.join(', ')})`);
    }
    if (seen.has(key)) throw new RedisUrlError(`parameter ${key} is given twice`);
    seen.add(key);
    if (value === '') throw new RedisUrlError(`parameter ${key} is empty`);
    if (key === 'sentinel_username') out.sentinelUsername = value;
    else out.sentinelPassword = value;
  }
  if (out.sentinelUsername !== undefined && out.sentinelPassword === undefined) throw new RedisUrlError('sentinel_username needs sentinel_password');
}

/** `host`, `host:port`, `[v6]` or `[v6]:port`; `n` is its place in the list, for messages. */
function parseHostPort(entry: string, n: number): RedisHost {
  if (entry === '') throw new RedisUrlError(`empty entry #${n} in the Sentinel list (a stray ","?)`);
  let host: string;
  let portText: string | undefined;
  if (entry.startsWith('[')) {
    const close = entry.indexOf(']');
    if (close === -1) throw new RedisUrlError(`Sentinel #${n}: "[" without "]" around an IPv6 address`);
    host = entry.slice(1, close);
    const after = entry.slice(close + 1);
    if (after !== '' && !after.startsWith(':')) throw new RedisUrlError(`Sentinel #${n}: unexpected text after the IPv6 address`);
    portText = after === '' ? undefined : after.slice(1);
    if (!IPV6.test(host) || !host.includes(':')) throw new RedisUrlError(`Sentinel #${n}: not an IPv6 address in brackets`);
  } else {
    const colon = entry.indexOf(':');
    if (colon !== -1 && entry.indexOf(':', colon + 1) !== -1) throw new RedisUrlError(`Sentinel #${n}: an IPv6 address needs brackets ([::1]:26379)`);
    host = colon === -1 ? entry : entry.slice(0, colon);
    portText = colon === -1 ? undefined : entry.slice(colon + 1);
    if (host === '') throw new RedisUrlError(`Sentinel #${n}: no host before the port`);
    if (!HOSTNAME.test(host) || host.includes('..')) throw new RedisUrlError(`Sentinel #${n}: "${host}" is not a host name or IP address`);
  }
  if (portText === undefined) return { host, port: SENTINEL_PORT };
  if (!/^\d{1,5}$/.test(portText)) throw new RedisUrlError(`Sentinel #${n} (${host}): the port must be a number from 1 to 65535`);
  const port = Number(portText);
  if (port < 1 || port > 65535) throw new RedisUrlError(`Sentinel #${n} (${host}): port ${port} is out of range (1-65535)`);
  return { host, port };
}

function decodeUserInfo(rawUser: string, rawPassword: string): { username?: string; password?: string } {
  const username = decode(rawUser, 'the user name');
  const password = decode(rawPassword, 'the password');
  return { ...(username !== '' ? { username } : {}), ...(password !== '' ? { password } : {}) };
}

function decode(s: string, what: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new RedisUrlError(`bad percent-encoding in ${what}`);
  }
}

/** `host:port`, IPv6 in brackets. */
export function formatHost(h: RedisHost): string {
  return h.host.includes(':') ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`;
}
