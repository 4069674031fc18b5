import type { Access } from '../config/schema.js';
import type { CompiledRoute, RouteTable } from './routes.js';

/** A policy that is legal but likely wrong: reported by `config check`, never fatal. */
export interface PolicyWarning {
  /** Config key path of the route that causes it. */
  readonly path: readonly PropertyKey[];
  readonly message: string;
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/** deny > roles > authenticated > public. */
function rank(a: Access): number {
  if (a === 'deny') return 3;
  if (a === 'public') return 0;
  if (a === 'authenticated') return 1;
  return 2;
}

/** True when `b` lets through someone `a` would stop (access, roles or the second factor). */
function weaker(a: CompiledRoute, b: CompiledRoute): boolean {
  const x = a.config.access;
  const y = b.config.access;
  if (rank(y) < rank(x)) return true;
  if (typeof x === 'object' && typeof y === 'object' && y.roles.some((r) => !x.roles.includes(r))) return true;
  return a.config.mfa && !b.config.mfa && y !== 'deny';
}

/** A concrete request path the route's pattern matches (`*` → `x`, `**` → `x`). */
function samplePath(r: CompiledRoute): string {
  const segs = r.pathPattern
    .split('/')
    .slice(1)
    .filter((s) => s !== '');
  return `/${segs.map((s) => (s === '**' ? 'x' : s.replace(/\*/g, 'x'))).join('/')}`;
}

function sampleHost(r: CompiledRoute): string | undefined {
  const h = r.config.match.host;
  if (h === undefined) return undefined;
  return h.startsWith('*.') ? `a${h.slice(1)}` : h;
}

const describe = (a: Access): string => (typeof a === 'object' ? `roles [${a.roles.join(', ')}]` : a);

/**
 * Method fall-through (SPEC §2): a route restricted to some methods leaves the others to later
 * routes; when a later route that catches them has weaker access, a method the author did not
 * list (DELETE, PUT…) is authorized more loosely than the ones they did. One warning per pair.
 */
export function methodFallthroughWarnings(table: RouteTable): PolicyWarning[] {
  const out: PolicyWarning[] = [];
  for (const r of table.routes) {
    const listed = r.config.match.methods;
    if (listed === undefined) continue;
    const path = samplePath(r);
    const host = sampleHost(r);
    const byRoute = new Map<CompiledRoute, string[]>();
    for (const m of METHODS) {
      if (r.matchesMethod(m)) continue;
      const other = table.match({ host, method: m, path });
      if (other === undefined || other === r || !weaker(r, other)) continue;
      byRoute.set(other, [...(byRoute.get(other) ?? []), m]);
    }
    for (const [other, methods] of byRoute) {
      out.push({
        path: ['routes', r.index, 'match', 'methods'],
        message:
          `route "${r.name}" (${describe(r.config.access)}${r.config.mfa ? ', mfa' : ''}) only takes [${listed.join(', ')}]: ` +
          `${methods.join(', ')} ${path} fall through to route "${other.name}" (${describe(other.config.access)}${other.config.mfa ? ', mfa' : ''}). ` +
          `Drop the method list, or add a route for the other methods with access: deny.`,
      });
    }
  }
  return out;
}
