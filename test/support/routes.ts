import type { RouteConfig } from '../../src/config/schema.js';

/** Builds a `RouteConfig` the way the schema would (defaults filled in); for tests. */
export function route(
  name: string,
  match: { path?: string; host?: string; methods?: string[]; case_sensitive?: boolean } = {},
  rest: Partial<Omit<RouteConfig, 'name' | 'match'>> = {},
): RouteConfig {
  return {
    name,
    match: {
      path: match.path ?? '/**',
      case_sensitive: match.case_sensitive ?? false,
      ...(match.host === undefined ? {} : { host: match.host }),
      ...(match.methods === undefined ? {} : { methods: match.methods }),
    },
    upstream: 'app',
    access: 'public',
    mfa: false,
    allow_semicolons: false,
    ...rest,
  };
}
