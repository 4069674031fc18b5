import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { runCliInProcess } from '../../test/support/helpers.js';
import { ConfigError, parseConfig } from './index.js';
import { configJsonSchema, SCHEMA_FILE } from './json-schema.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const at = (p: string) => join(ROOT, p);
const REGENERATE = 'npm run config:schema (or: npx portcullis config schema > config/gateway.schema.json)';

type Node = { [k: string]: unknown };
const isNode = (v: unknown): v is Node => typeof v === 'object' && v !== null && !Array.isArray(v);

function validator() {
  const ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false });
  ajv.addFormat('uri', { type: 'string', validate: (s: string) => URL.canParse(s) });
  return ajv.compile(configJsonSchema());
}
const validate = validator();
const valid = (doc: unknown) => {
  const ok = validate(doc);
  return { ok, errors: JSON.stringify(validate.errors) };
};

describe('the JSON Schema of the config file', () => {
  it(`is committed as ${SCHEMA_FILE} exactly as \`config schema\` prints it`, async () => {
    const r = await runCliInProcess(['config', 'schema']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${JSON.stringify(configJsonSchema(), null, 2)}\n`);
    const committed = readFileSync(at(SCHEMA_FILE), 'utf8');
    expect(committed === r.stdout, `${SCHEMA_FILE} is out of date with src/config/schema.ts: regenerate it with ${REGENERATE}`).toBe(true);
  });

  it('describes every key, at every level, so editors show what it does', () => {
    const undescribed: string[] = [];
    const walk = (n: Node, path: string) => {
      const props = n.properties;
      if (isNode(props)) {
        for (const [k, v] of Object.entries(props)) {
          if (!isNode(v)) continue;
          if (typeof v.description !== 'string' || v.description.length < 10) undescribed.push(`${path}${k}`);
          walk(v, `${path}${k}.`);
        }
      }
      if (isNode(n.items)) walk(n.items, `${path.replace(/\.$/, '')}[].`);
      if (isNode(n.additionalProperties)) walk(n.additionalProperties, `${path}<name>.`);
      for (const m of (n.anyOf as unknown[] | undefined) ?? []) if (isNode(m)) walk(m, path);
    };
    const schema = configJsonSchema();
    walk(schema, '');
    expect(undescribed).toEqual([]);
    // The SPEC §2 keys are all there (a spot check that the walk saw the nesting).
    const props = schema.properties as Node;
    for (const k of ['listen', 'tls', 'public_url', 'trust_proxy', 'admin', 'storage', 'auth', 'identity_headers', 'upstreams', 'routes'])
      expect(props).toHaveProperty(k);
  });

  it('shows defaults as they are written in the file (durations and addresses as strings)', () => {
    const p = configJsonSchema().properties as Record<string, Node>;
    expect(p.listen.default).toBe('127.0.0.1:8080');
    expect(p.shutdown_grace.default).toBe('25s');
    expect(p.workers.default).toBe(1);
    const auth = (p.auth.properties ?? {}) as Record<string, Node>;
    expect(auth.access_ttl.default).toBe('15m');
    expect(auth.refresh_ttl.default).toBe('7d');
    expect(auth.login_rate_limit.default).toEqual({ requests: 5, per: '1m' });
    expect(((p.storage.properties as Record<string, Node>).database_url as Node).default).toBe('sqlite:./data/portcullis.db');
  });

  for (const file of ['config/gateway.yaml', 'config/container.yaml', 'deploy/compose/gateway.yaml', 'deploy/kubernetes/gateway.yaml']) {
    it(`validates ${file} as written (\${VAR} expressions included) and the file names it in its modeline`, () => {
      const text = readFileSync(at(file), 'utf8');
      const { ok, errors } = valid(parseYaml(text));
      expect(ok, errors).toBe(true);
      const modeline = /^# yaml-language-server: \$schema=(\S+)$/m.exec(text);
      expect(modeline, `${file} has no yaml-language-server modeline`).not.toBeNull();
      expect(resolve(dirname(at(file)), modeline?.[1] ?? '')).toBe(at(SCHEMA_FILE));
    });
  }

  // The schema and the loader agree, case by case: each file is accepted by both or refused by both.
  const cases: [string, string, boolean][] = [
    ['the smallest config', '{}', true],
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the config syntax, quoted
    ['an interpolated number', 'auth:\n  login_rate_limit:\n    requests: ${LIMIT:-5}\n    per: 1m', true],
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the config syntax, quoted
    ['an interpolated duration, enum and address', 'shutdown_grace: ${G:-10s}\nlog_level: ${L:-debug}\nlisten: ${LISTEN:-0.0.0.0:80}', true],
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the config syntax, quoted
    ['an interpolated boolean and URL', 'upstreams:\n  a:\n    url: ${UPSTREAM:-http://x}\n    assertion: ${ASSERT:-true}', true],
    ['workers: auto', 'workers: auto', true],
    ['an unknown key', 'colour: red', false],
    ['an unknown nested key', 'auth: { prefx: /x }', false],
    ['a bad enum', 'log_level: verbose', false],
    ['a word for a number', 'auth: { login_rate_limit: { requests: five, per: 1m } }', false],
    ['a duration without a unit', 'shutdown_grace: "25"', false],
    ['a listen address without a port', 'listen: localhost', false],
    ['a route without access', 'routes: [{ name: a, match: { path: /x } }]', false],
    ['a route without match', 'routes: [{ name: a, access: deny }]', false],
    ['a bad access word', 'routes: [{ name: a, match: { path: /x }, access: everyone }]', false],
    ['an empty role list', 'routes: [{ name: a, match: { path: /x }, access: { roles: [] } }]', false],
    ['a non-http upstream', 'upstreams: { a: { url: "ftp://x" } }', false],
    ['a mysql database', 'storage: { database_url: "mysql://u@h/db" }', false],
    ['argon2 below the floor', 'auth: { argon2: { memory_kib: 1024 } }', false],
    ['workers: 0', 'workers: 0', false],
    ['a path pattern without a leading /', 'routes: [{ name: a, match: { path: x }, access: deny }]', false],
  ];
  for (const [what, yaml, expected] of cases) {
    it(`${expected ? 'accepts' : 'refuses'} ${what}, as the loader does`, () => {
      const env = { LIMIT: '7', G: '', L: '', LISTEN: '', ASSERT: '', UPSTREAM: '' };
      let loaderOk = true;
      try {
        parseConfig(yaml, 'case.yaml', env);
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        loaderOk = false;
      }
      expect(loaderOk, 'the loader').toBe(expected);
      expect(valid(parseYaml(yaml)).ok, 'the JSON Schema').toBe(expected);
    });
  }
});
