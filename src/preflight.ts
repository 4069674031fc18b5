import { lookup } from 'node:dns/promises';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { createSecureContext } from 'node:tls';
import {
  ConfigError,
  inspectConfigFile,
  type Config,
  type ConfigCheck,
  type ConfigDraft,
  type ConfigFinding,
  type ConfigInspection,
  type ConfigProblem,
} from './config/index.js';
import { isProduction, productionGaps } from './config/production.js';
import { Errors, GatewayError } from './errors/index.js';
import { compileRoutes, methodFallthroughWarnings, routePatternCheck } from './policy/index.js';
import { shadowedRouteWarnings } from './policy/shadow.js';
import { parseCidr, parseIp } from './proxy/ip.js';
import { parseDatabaseUrl } from './store/sql/url.js';
import { loadKeySet, readKeyFile, type KeySet } from './tokens/index.js';
import { loadSecretBox } from './auth/secret-box.js';

/** The configured signing keys (file or `PORTCULLIS_SIGNING_KEYS`), parsed; undefined when none are configured. */
export async function configuredKeys(config: Config, env: NodeJS.ProcessEnv): Promise<KeySet | undefined> {
  if (config.keys.signing_keys_file) return readKeyFile(config.keys.signing_keys_file);
  return envKeys(env);
}

async function envKeys(env: NodeJS.ProcessEnv): Promise<KeySet | undefined> {
  if (!env.PORTCULLIS_SIGNING_KEYS) return undefined;
  let jwks: unknown;
  try {
    jwks = JSON.parse(env.PORTCULLIS_SIGNING_KEYS);
  } catch {
    throw new GatewayError(Errors.missing_keys, 'PORTCULLIS_SIGNING_KEYS is not valid JSON (expected a JWKS with private keys).');
  }
  return loadKeySet(jwks as Parameters<typeof loadKeySet>[0], 'PORTCULLIS_SIGNING_KEYS');
}

/** `trust_proxy` entries, by the very parser the gateway uses for them (`proxy/ip.ts`). */
function trustProxyCheck(draft: ConfigDraft): ConfigFinding[] {
  const out: ConfigFinding[] = [];
  (draft.trust_proxy ?? []).forEach((entry, i) => {
    if (entry === undefined) return;
    try {
      parseCidr(entry);
    } catch (e) {
      out.push({ path: ['trust_proxy', i], message: (e as Error).message });
    }
  });
  return out;
}

/**
 * An upstream URL's parts the proxy does not send: credentials (`user:pass@`), a query and a
 * fragment. Accepting them silently would let a team believe the upstream gets them.
 */
function upstreamUrlCheck(draft: ConfigDraft): ConfigFinding[] {
  const out: ConfigFinding[] = [];
  for (const [name, u] of Object.entries(draft.upstreams ?? {})) {
    if (typeof u?.url !== 'string') continue;
    let url: URL;
    try {
      url = new URL(u.url);
    } catch {
      continue; // the schema reports an invalid URL
    }
    const dropped = [
      url.username || url.password ? 'credentials (user:password@)' : '',
      url.search ? 'a query string' : '',
      url.hash ? 'a fragment' : '',
    ].filter(Boolean);
    if (dropped.length)
      out.push({
        path: ['upstreams', name, 'url'],
        message: `${dropped.join(', ')} in an upstream URL would not be sent: remove ${dropped.length > 1 ? 'them' : 'it'} (the base path is kept)`,
      });
  }
  return out;
}

/** A listen host that is written as an IP address must be one (a host name is looked up at start). */
function listenHostCheck(draft: ConfigDraft): ConfigFinding[] {
  const out: ConfigFinding[] = [];
  const hosts: [readonly PropertyKey[], string | undefined][] = [
    [['listen'], draft.listen?.host],
    [['admin', 'listen'], draft.admin?.listen?.host],
    [['demo_upstream', 'listen'], draft.demo_upstream?.listen?.host],
  ];
  for (const [path, host] of hosts) {
    if (host === undefined || !(/^[\d.]+$/.test(host) || host.includes(':'))) continue;
    if (!parseIp(host)) out.push({ path, message: `"${host}" is not an IP address (use a host name, an IPv4 address or [IPv6]:port)` });
  }
  return out;
}

/** `storage.database_url`, by the database layer's own parser (the scheme is the schema's). */
function databaseUrlCheck(draft: ConfigDraft): ConfigFinding[] {
  const url = draft.storage?.database_url;
  if (url === undefined) return [];
  try {
    parseDatabaseUrl(url);
    return [];
  } catch (e) {
    return [{ path: ['storage', 'database_url'], message: (e as Error).message }];
  }
}

/**
 * The checks beyond the schema that need modules above `config/`, each by the parser the gateway
 * itself uses: route patterns, `trust_proxy` ranges, listen addresses, the database URL. No I/O:
 * a reload can run them too.
 */
export const configChecks: readonly ConfigCheck[] = [routePatternCheck, trustProxyCheck, listenHostCheck, databaseUrlCheck, upstreamUrlCheck];

/** Reads a file a key names; a finding at that key when it cannot be read. */
async function readNamed(path: readonly PropertyKey[], file: string, out: ConfigFinding[]): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === 'ENOENT' ? 'file not found' : err.code === 'EACCES' ? 'permission denied' : err.code === 'EISDIR' ? 'is a directory' : err.message;
    out.push({ path, message: `cannot read ${file}: ${why}` });
    return undefined;
  }
}

function opensslReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  if (code === 'ERR_OSSL_PEM_NO_START_LINE' || code === 'ERR_OSSL_UNSUPPORTED') return 'no PEM block of that kind';
  if (code === 'ERR_OSSL_BAD_DECRYPT') return 'it is encrypted; the gateway takes no passphrase';
  return (e as Error).message.replace(/^error:[0-9A-F]+:/, '');
}

/** `tls.cert` and `tls.key`: readable, a PEM certificate and a PEM private key, and a pair, as the HTTPS listener will load them. */
async function tlsFindings(tls: ConfigDraft['tls']): Promise<ConfigFinding[]> {
  const out: ConfigFinding[] = [];
  if (tls === undefined) return out;
  const cert = tls.cert === undefined ? undefined : await readNamed(['tls', 'cert'], tls.cert, out);
  const key = tls.key === undefined ? undefined : await readNamed(['tls', 'key'], tls.key, out);
  let certOk = false;
  let keyOk = false;
  if (cert) {
    try {
      createSecureContext({ cert });
      certOk = true;
    } catch (e) {
      out.push({ path: ['tls', 'cert'], message: `${tls.cert} is not a PEM certificate (${opensslReason(e)})` });
    }
  }
  if (key) {
    try {
      createSecureContext({ key });
      keyOk = true;
    } catch (e) {
      out.push({ path: ['tls', 'key'], message: `${tls.key} is not a PEM private key (${opensslReason(e)})` });
    }
  }
  if (certOk && keyOk) {
    try {
      createSecureContext({ cert, key, minVersion: tls.min_version, ciphers: tls.ciphers });
    } catch (e) {
      const mismatch = (e as NodeJS.ErrnoException).code === 'ERR_OSSL_X509_KEY_VALUES_MISMATCH';
      out.push({ path: ['tls', 'key'], message: mismatch ? `${tls.key} is not the key of the certificate in ${tls.cert}` : opensslReason(e) });
    }
  }
  return out;
}

/** Two listeners on one port where one address covers the other: the second bind fails at start. */
type Listen = { host?: string; port?: number } | undefined;

/**
 * The addresses a listen host stands for, as `listen()` will look them up: an IP as is, a name
 * through the resolver (`localhost` is 127.0.0.1 and ::1); undefined when the name does not
 * resolve (serve could not listen on it).
 */
async function addressesOf(host: string): Promise<string[] | undefined> {
  if (host === '' || parseIp(host)) return [host];
  // Written as an IP but not one: listenHostCheck reports it; no lookup.
  if (/^[\d.]+$/.test(host) || host.includes(':')) return [];
  try {
    return (await lookup(host, { all: true })).map((a) => a.address);
  } catch {
    return undefined;
  }
}

/** Whether two listeners would bind the same port on a shared address (a wildcard shares with all). */
function collide(a: Listen, b: Listen, addrs: Map<string, string[] | undefined>): boolean {
  if (a?.port === undefined || a.port === 0 || a.port !== b?.port || a.host === undefined || b.host === undefined) return false;
  const any = (h: string) => h === '0.0.0.0' || h === '::' || h === '';
  if (a.host === b.host || any(a.host) || any(b.host)) return true;
  const x = addrs.get(a.host) ?? [];
  const y = new Set(addrs.get(b.host) ?? []);
  return x.some((ip) => y.has(ip) || any(ip));
}

/** Problems that only this environment makes: one line each, without a place in the file. */
interface EnvProblem {
  readonly error: GatewayError;
}

function asGatewayError(e: unknown): GatewayError {
  if (e instanceof GatewayError) return e;
  return new GatewayError(Errors.invalid_config, (e as Error).message ?? String(e));
}

/**
 * What `serve` checks before it opens anything, run in one pass, and what `portcullis config
 * check` runs, so a config the check accepts starts:
 *
 * - the file: YAML, `${VAR}`s, the schema, the checks across keys, {@link configChecks};
 * - the files it names: `tls.cert` and `tls.key` (readable, PEM, a pair), and
 *   `keys.signing_keys_file` (readable, a usable key set);
 * - listeners that would collide, `workers` above 1 without shared state;
 * - the environment: production mode's requirements (public_url, keys, encryption key: one
 *   line naming everything missing), `PORTCULLIS_SIGNING_KEYS` and `PORTCULLIS_ENCRYPTION_KEY`
 *   parsed for real.
 *
 * Problems of the file come as `file:line: key.path: message`; those of the environment alone as
 * one line each. Writes nothing.
 *
 * @returns the config and its warnings (legal but likely wrong policies), located in the file
 * @throws ConfigError listing every problem; a GatewayError when the only problem is one of the
 *   environment (so it is the one line production mode's refusal is)
 */
export async function checkConfigFile(file: string, env: NodeJS.ProcessEnv): Promise<{ config: Config; warnings: ConfigProblem[] }> {
  const ins = inspectConfigFile(file, env, configChecks);
  if (ins.unreadable) throw new ConfigError([...ins.problems]);
  const draft = ins.draft;
  const findings: ConfigFinding[] = [];
  const envProblems: EnvProblem[] = [];
  const production = isProduction(env);

  findings.push(...(await tlsFindings(draft.tls)));

  const keysFile = draft.keys?.signing_keys_file;
  if (keysFile) {
    try {
      await readKeyFile(keysFile);
    } catch (e) {
      findings.push({ path: ['keys', 'signing_keys_file'], message: asGatewayError(e).message });
    }
  } else if (!ins.given(['keys', 'signing_keys_file'])) {
    try {
      await envKeys(env);
    } catch (e) {
      envProblems.push({ error: asGatewayError(e) });
    }
  }

  // A key present but invalid is its own problem, not also a gap.
  const gaps = productionGaps(
    { public_url: ins.given(['public_url']) ? 'set' : undefined, keys: { signing_keys_file: ins.given(['keys', 'signing_keys_file']) ? 'set' : '' } },
    env,
  );
  if (gaps.length) envProblems.push({ error: new GatewayError(Errors.invalid_config, `NODE_ENV=production refuses to start without ${gaps.join('; ')}`) });
  if (env.PORTCULLIS_ENCRYPTION_KEY) {
    try {
      // With the key set this parses it (and the previous keys) and writes nothing.
      loadSecretBox(env, join(draft.data_dir ?? '.', 'encryption.key'), () => undefined);
    } catch (e) {
      envProblems.push({ error: asGatewayError(e) });
    }
  }

  const workers = draft.workers === 'auto' ? availableParallelism() : draft.workers;
  if (workers !== undefined && workers > 1 && !ins.given(['storage', 'redis_url'])) {
    findings.push({
      path: ['workers'],
      message: `${draft.workers === 'auto' ? `auto (${workers} CPUs)` : workers} needs storage.redis_url: in-process state (rate limits, lockouts, revocations, TOTP steps) is not shared between processes`,
    });
  }

  // Host names resolved as listen() will: a name that does not resolve cannot be listened on,
  // and two names (or a name and an IP) may be one address.
  const addrs = new Map<string, string[] | undefined>();
  const listeners: [readonly PropertyKey[], Listen][] = [
    [['listen'], draft.listen],
    [['admin', 'listen'], draft.admin?.listen],
    ...(production ? [] : ([[['demo_upstream', 'listen'], draft.demo_upstream?.listen]] as [readonly PropertyKey[], Listen][])),
  ];
  for (const [path, l] of listeners) {
    if (l?.host === undefined || addrs.has(l.host)) continue;
    const found = await addressesOf(l.host);
    addrs.set(l.host, found);
    if (!found) findings.push({ path, message: `cannot resolve the host name "${l.host}": serve could not listen on it` });
  }
  if (collide(draft.admin?.listen, draft.listen, addrs))
    findings.push({ path: ['admin', 'listen'], message: 'the same port as listen: both listeners cannot bind it' });
  // Production ignores demo_upstream (it never runs there).
  if (!production) {
    const demo = draft.demo_upstream?.listen;
    if (collide(demo, draft.listen, addrs))
      findings.push({ path: ['demo_upstream', 'listen'], message: 'the same port as listen: both listeners cannot bind it' });
    else if (collide(demo, draft.admin?.listen, addrs))
      findings.push({ path: ['demo_upstream', 'listen'], message: 'the same port as admin.listen: both listeners cannot bind it' });
  }

  const problems = [...ins.problems, ...findings.map((f) => ins.locate(f))].sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  if (problems.length === 0 && envProblems.length === 1) throw envProblems[0].error;
  if (problems.length || envProblems.length || !ins.config) {
    throw new ConfigError([...problems, ...envProblems.map((p) => ({ file, line: undefined, path: '', message: p.error.message, environment: true }))]);
  }
  return { config: ins.config, warnings: configWarnings(ins) };
}

/** Warnings of a valid config: method fall-through onto weaker access, routes that can never match. */
function configWarnings(ins: ConfigInspection): ConfigProblem[] {
  if (!ins.config) return [];
  const table = compileRoutes(ins.config.routes);
  return [...methodFallthroughWarnings(table), ...shadowedRouteWarnings(table)].map((w) => ins.locate(w)).sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
}
