#!/usr/bin/env bash
# Scans a TLS listener with sslscan and fails when it accepts anything weaker than Portcullis'
# default policy (docs/configuration.md, "TLS"):
#   - a protocol older than TLS 1.2 (SSLv2, SSLv3, TLSv1.0, TLSv1.1) is enabled;
#   - a TLS 1.2 suite without forward secrecy (not ECDHE/DHE: static RSA, PSK, anonymous);
#   - a TLS 1.2 suite that is not AEAD (CBC, RC4, 3DES, NULL), or an export/anon/MD5 suite.
# TLS 1.3 suites are all AEAD with ephemeral key exchange and always pass.
#
# Usage:   scripts/tls-scan.sh HOST:PORT [extra sslscan options...]
#          SSLSCAN=/path/to/sslscan scripts/tls-scan.sh gw.example.com:443
# Exit:    0 policy met, 1 weak protocol or suite found (listed), 2 usage error or scan failed.
# Needs:   sslscan 2.x (Debian/Ubuntu: apt-get install sslscan).
set -uo pipefail

if [ $# -lt 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
target=$1
shift
sslscan=${SSLSCAN:-sslscan}
if ! command -v "$sslscan" >/dev/null 2>&1; then
  echo "tls-scan: sslscan not found (install the sslscan package or set SSLSCAN)" >&2
  exit 2
fi

out=$(timeout "${TLS_SCAN_TIMEOUT:-120}" "$sslscan" --no-colour "$@" "$target" 2>&1)
rc=$?
if [ $rc -ne 0 ] || ! grep -Eq '^(Preferred|Accepted) +TLSv1\.[23] ' <<<"$out"; then
  echo "$out" >&2
  echo "tls-scan: the scan of $target failed (sslscan exit $rc, or no TLS 1.2/1.3 suite accepted)" >&2
  exit 2
fi

weak=$(awk '
  # Protocol section: "TLSv1.0   enabled"
  /^(SSLv2|SSLv3|TLSv1\.0|TLSv1\.1) +enabled/ { print "protocol " $1 " enabled"; next }
  /^(Preferred|Accepted) / {
    proto = $2; suite = $5
    if (proto !~ /^TLSv1\.[23]$/) { print "suite " suite " accepted with " proto; next }
    if (proto == "TLSv1.3") next
    why = ""
    if (suite !~ /^(ECDHE|DHE|EDH)-/) why = why " no-forward-secrecy"
    if (suite !~ /(GCM|CHACHA20-POLY1305|CCM)/) why = why " not-AEAD"
    if (suite ~ /(RC4|DES|NULL|EXP|MD5|anon|ADH|AECDH)/) why = why " broken-primitive"
    if (why != "") print "suite " suite " (" proto "):" why
  }
' <<<"$out")

echo "$out" | sed -n '/SSL\/TLS Protocols:/,/^$/p;/Supported Server Cipher/,/^$/p'
if [ -n "$weak" ]; then
  echo "tls-scan: $target FAILS the policy:"
  echo "$weak" | sed 's/^/  /'
  exit 1
fi
echo "tls-scan: $target meets the policy (TLS 1.2+, forward-secret AEAD suites only)"
exit 0
