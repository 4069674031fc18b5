/**
 * Request policy: path normalization, route compiling and matching, access decisions, and the
 * `policy explain` report. Pure code, no I/O: everything here is safe on the hot path.
 * @packageDocumentation
 */
export { normalizePath, type NormalizedTarget } from './normalize.js';
export { compileRoutes, type CompiledRoute, type RouteRequest, type RouteTable } from './routes.js';
export { assertSemicolonsAllowed, decide, decisionError, type Decision, type Identity } from './decide.js';
export { explain, formatExplain, type ExplainAttempt, type ExplainRequest, type ExplainResult, type ExplainVerdict } from './explain.js';
export { routePatternCheck } from './check.js';
