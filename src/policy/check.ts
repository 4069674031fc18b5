import type { Config } from '../config/index.js';
import { GatewayError } from '../errors/index.js';
import { compileRoutes } from './routes.js';

/**
 * Config check for `loadConfig`: compiles every route's path pattern on its own, so one bad
 * pattern does not hide the next, and reports each at `routes[i].match.path`.
 */
export function routePatternCheck(cfg: Config): { path: readonly PropertyKey[]; message: string }[] {
  const problems: { path: readonly PropertyKey[]; message: string }[] = [];
  cfg.routes.forEach((route, i) => {
    try {
      compileRoutes([route]);
    } catch (e) {
      if (!(e instanceof GatewayError)) throw e;
      problems.push({ path: ['routes', i, 'match', 'path'], message: e.message.replace(/^routes\[0\] "[^"]*": /, '') });
    }
  });
  return problems;
}
