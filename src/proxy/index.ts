/**
 * Forwarding to upstreams: http-proxy wiring with one keep-alive agent per upstream,
 * identity/forwarding header hygiene, upstream error mapping (502/504) and the
 * problem+json writer shared with the http layer.
 */
export {
  createProxy,
  classifyUpstreamError,
  type CreateProxyOptions,
  type ForwardTarget,
  type GatewayProxy,
  type ProxyLog,
  type ProxyResponder,
  type UpstreamFailure,
  type UpstreamResult,
} from './proxy.js';
export { writeProblem, writeProblemToSocket, problemBody, problemType, type ProblemBody } from './problem.js';
export { clientIpFrom, createIpMatcher, normalizeIp, parseCidr, parseIp, type ParsedIp } from './ip.js';
export { filterCookieHeader, headerSafe } from './headers.js';
