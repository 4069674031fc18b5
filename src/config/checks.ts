import type { z } from 'zod';
import type { ParsedConfig } from './schema.js';

/** A problem found by a check, by key path (`['routes', 2, 'match', 'path']`); the loader adds file and line. */
export interface ConfigFinding {
  readonly path: readonly PropertyKey[];
  readonly message: string;
}

type DeepPartial<T> = T extends readonly (infer U)[]
  ? readonly (DeepPartial<U> | undefined)[]
  : T extends object
    ? { readonly [K in keyof T]?: DeepPartial<T[K]> }
    : T;

/**
 * What parsed of a config, key by key: every value the schema accepted (defaults filled in), and
 * nothing where the file has a problem. A valid config is its own draft. Checks beyond the schema
 * look at the draft, so one problem never hides another: a bad `listen` does not stop the route
 * patterns, the upstream references or the TLS files from being checked in the same pass.
 */
export type ConfigDraft = DeepPartial<ParsedConfig>;

/** A check beyond the schema (route patterns, addresses, URLs…): returns its findings. */
export type ConfigCheck = (draft: ConfigDraft) => ConfigFinding[];

type AnyDef = {
  type: string;
  innerType?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  valueType?: z.ZodType;
};

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Parses `value` with `schema`; where that fails, parses the parts (object keys, array items,
 * record entries) one by one and keeps those that pass. A part that fails as a whole and has no
 * parts (a scalar, a union, a duration) is left out.
 */
export function salvage(schema: z.ZodType, value: unknown): unknown {
  const whole = schema.safeParse(value);
  if (whole.success) return whole.data;
  const def = schema._zod.def as unknown as AnyDef;
  switch (def.type) {
    case 'default':
    case 'prefault':
    case 'optional':
    case 'nullable':
      return def.innerType && value !== undefined ? salvage(def.innerType, value) : undefined;
    case 'object': {
      if (!isPlainObject(value) || !def.shape) return undefined;
      const out: Record<string, unknown> = {};
      for (const [key, sub] of Object.entries(def.shape)) {
        const v = salvage(sub, value[key]);
        if (v !== undefined) out[key] = v;
      }
      return out;
    }
    case 'array':
      return Array.isArray(value) && def.element ? value.map((item) => salvage(def.element as z.ZodType, item)) : undefined;
    case 'record': {
      if (!isPlainObject(value) || !def.valueType) return undefined;
      // Every name is kept (an entry that fails still exists, for references to it).
      const out: Record<string, unknown> = {};
      for (const [key, v] of Object.entries(value)) out[key] = salvage(def.valueType, v) ?? {};
      return out;
    }
    default:
      return undefined;
  }
}

/**
 * The checks across keys (the schema checks each value on its own): unique route names, upstream
 * references, `mfa` on public routes, limits and lengths in order, https with TLS. `given(path)` tells whether the file sets a value there (so a
 * value that is present but invalid is not also reported missing).
 */
export function crossChecks(draft: ConfigDraft, given: (path: readonly PropertyKey[]) => boolean): ConfigFinding[] {
  const out: ConfigFinding[] = [];
  const seen = new Map<string, number>();
  const upstreams = draft.upstreams;
  (draft.routes ?? []).forEach((r, i) => {
    if (r === undefined) return;
    if (r.name !== undefined) {
      const first = seen.get(r.name);
      if (first !== undefined) out.push({ path: ['routes', i, 'name'], message: `duplicate route name "${r.name}" (also routes[${first}])` });
      else seen.set(r.name, i);
    }
    if (r.upstream === undefined) {
      if (r.access !== undefined && r.access !== 'deny' && !given(['routes', i, 'upstream'])) {
        out.push({ path: ['routes', i, 'upstream'], message: 'required unless access is deny' });
      }
    } else if (upstreams !== undefined && !Object.hasOwn(upstreams, r.upstream)) {
      const names = Object.keys(upstreams);
      out.push({
        path: ['routes', i, 'upstream'],
        message: `no upstream named "${r.upstream}" (${names.length ? `upstreams: ${names.join(', ')}` : 'no upstreams are configured'})`,
      });
    }
    if (r.mfa === true && r.access === 'public') out.push({ path: ['routes', i, 'mfa'], message: 'mfa: true makes no sense on a public route' });
  });
  const limits = draft.limits;
  if (limits?.headers_timeout !== undefined && limits.request_timeout !== undefined && limits.headers_timeout > limits.request_timeout) {
    out.push({ path: ['limits', 'headers_timeout'], message: 'greater than request_timeout' });
  }
  const pw = draft.auth?.password;
  if (pw?.min_length !== undefined && pw.max_length !== undefined && pw.min_length > pw.max_length) {
    out.push({ path: ['auth', 'password', 'min_length'], message: 'greater than max_length' });
  }
  if (given(['tls']) && draft.public_url?.startsWith('http:')) out.push({ path: ['public_url'], message: 'must be https:// when tls is set' });
  return out;
}
