import { z } from 'zod';
import { configSchema } from './schema.js';

type JsonSchema = { [key: string]: unknown };

/** Where `config schema`'s output is committed; the shipped configs name it in their modeline. */
export const SCHEMA_FILE = 'config/gateway.schema.json';

/**
 * A value written as `${VAR}` or `${VAR:-default}` (anywhere in the string): the loader replaces
 * it from the environment before it checks the value, so the file may hold one wherever a value
 * of another type or shape is expected (`requests: ${LIMIT:-5}`, `url: ${UPSTREAM_URL}`).
 */
const INTERPOLATED: JsonSchema = {
  type: 'string',
  pattern: '\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: the config syntax, quoted
  description: 'Replaced from the environment when the file is loaded: ${VAR}, or ${VAR:-default} when VAR is unset or empty.',
};
const INTERPOLATED_REF = { $ref: '#/definitions/interpolated' };

/** Keys that describe a value rather than constrain it: they stay on the node when it is wrapped. */
const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', 'deprecated', 'readOnly', 'writeOnly', '$comment']);

const isObject = (v: unknown): v is JsonSchema => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A scalar whose constraints a `${VAR}` string would fail (a number, a boolean, an enum, a pattern, a URL…). */
function constrainsScalar(node: JsonSchema): boolean {
  const type = node.type;
  if (type === 'integer' || type === 'number' || type === 'boolean') return true;
  if (type !== 'string') return false;
  return ['pattern', 'format', 'enum', 'const', 'maxLength'].some((k) => k in node);
}

/** Lets every constrained scalar also be an interpolated string; descends into objects, arrays and unions. */
function allowInterpolation(node: JsonSchema): JsonSchema {
  for (const key of ['properties', 'definitions', '$defs']) {
    const children = node[key];
    if (isObject(children)) for (const [k, v] of Object.entries(children)) if (isObject(v)) children[k] = allowInterpolation(v);
  }
  for (const key of ['items', 'additionalProperties']) {
    const child = node[key];
    if (isObject(child)) node[key] = allowInterpolation(child);
  }
  const union = node.anyOf ?? node.oneOf;
  if (Array.isArray(union)) {
    const members = union.map((m) => (isObject(m) && !constrainsScalar(m) ? allowInterpolation(m) : m));
    if (members.some((m) => isObject(m) && constrainsScalar(m))) members.push(INTERPOLATED_REF);
    node[node.anyOf ? 'anyOf' : 'oneOf'] = members;
    return node;
  }
  if (!constrainsScalar(node)) return node;
  const value: JsonSchema = {};
  const outer: JsonSchema = {};
  for (const [k, v] of Object.entries(node)) (ANNOTATIONS.has(k) ? outer : value)[k] = v;
  return { ...outer, anyOf: [value, INTERPOLATED_REF] };
}

/**
 * The JSON Schema of the config file (`portcullis config schema`, committed as
 * `config/gateway.schema.json`), generated from the very zod schema the loader validates with.
 * It describes the file as written: durations and listen addresses as strings with their
 * defaults (`15m`, `127.0.0.1:8080`), and a `${VAR}` expression accepted wherever a value goes.
 * Draft-07, which editors' YAML language servers support. Checks across keys and against the
 * system (upstream references, readable TLS files, CIDR ranges) are `portcullis config check`'s.
 */
export function configJsonSchema(): JsonSchema {
  const generated = z.toJSONSchema(configSchema, { io: 'input', target: 'draft-7' }) as JsonSchema;
  const { $schema, title, description, ...rest } = allowInterpolation(generated);
  const definitions = isObject(rest.definitions) ? rest.definitions : {};
  return { $schema, title, description, ...rest, definitions: { ...definitions, interpolated: INTERPOLATED } };
}
