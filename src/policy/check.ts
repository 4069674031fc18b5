import type { ConfigDraft, ConfigFinding, RouteConfig } from '../config/index.js';
import { GatewayError } from '../errors/index.js';
import { compileRoutes } from './routes.js';

/**
 * Config check for `loadConfig`: compiles every route's path pattern on its own, so one bad
 * pattern does not hide the next (nor does any other problem of the route), and reports each at
 * `routes[i].match.path`.
 */
export function routePatternCheck(draft: ConfigDraft): ConfigFinding[] {
  const problems: ConfigFinding[] = [];
  (draft.routes ?? []).forEach((route, i) => {
    const path = route?.match?.path;
    if (path === undefined) return;
    // Only the pattern and its case rule take part in compiling it.
    const probe = { name: route?.name ?? `#${i}`, match: { path, case_sensitive: route?.match?.case_sensitive ?? false }, access: 'deny' } as RouteConfig;
    try {
      compileRoutes([probe]);
    } catch (e) {
      if (!(e instanceof GatewayError)) throw e;
      problems.push({ path: ['routes', i, 'match', 'path'], message: e.message.replace(/^routes\[0\] "[^"]*": /, '') });
    }
  });
  return problems;
}
