/**
 * A syntactically valid `Host` value (RFC 9110 §7.2, RFC 3986 §3.2.2): a DNS-style name (labels
 * of letters, digits, `-` and `_`, one optional trailing dot), an IPv4 address or a bracketed
 * IPv6 address, then an optional port 0–65535. Everything else — empty labels
 * (`intranet.example.com..`), brackets around a name (`[intranet.example.com]`), userinfo,
 * spaces, percent-escapes — is refused, because route host rules could not judge it the way
 * the upstream (or a virtual-host router behind it) would.
 */
const NAME = /^(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
const IPV6 = /^\[[0-9A-Fa-f:.]{2,45}\]$/;

export function validHost(host: string): boolean {
  if (host.length === 0 || host.length > 260) return false;
  let name = host;
  const close = host.lastIndexOf(']');
  const colon = host.lastIndexOf(':');
  if (colon > close) {
    const port = host.slice(colon + 1);
    if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) return false;
    name = host.slice(0, colon);
  }
  if (name.startsWith('[')) {
    if (!IPV6.test(name)) return false;
    const inner = name.slice(1, -1);
    // At most one "::", and something that could be an IPv6 address at all.
    return inner.includes(':') && inner.split('::').length <= 2;
  }
  return name.length <= 253 && NAME.test(name);
}
