/**
 * Request policy: path normalization, route compiling and matching, access decisions, the
 * `policy explain` report and the `policy test` runner. Pure code, no I/O: everything here is
 * safe on the hot path (the test runner parses text it is handed; the CLI reads the files).
 * @packageDocumentation
 */
export { matchKey, normalizePath, type MatchKey, type NormalizedTarget } from './normalize.js';
export { compileRoutes, parseHost, type CompiledRoute, type RouteRequest, type RouteTable } from './routes.js';
export {
  decide,
  decideRequest,
  decisionError,
  evaluateRequest,
  isVerdict,
  matchRequest,
  parseRequest,
  policyContext,
  resolveRequest,
  type AuthFacts,
  type Decision,
  type Identity,
  type Parsed,
  type PolicyContext,
  type PolicyDecision,
  type RequestFacts,
  type Resolved,
  type Verdict,
} from './decide.js';
export { originAllowed } from './origin.js';
export { validHost } from './host.js';
export { explain, formatExplain, type ExplainAttempt, type ExplainRequest, type ExplainResult, type ExplainVerdict } from './explain.js';
export {
  EXPECT_WORDS,
  formatFailure,
  formatTestFileProblem,
  parsePolicyTests,
  runPolicyTests,
  summaryLine,
  type ExpectWord,
  type PolicyTestCase,
  type PolicyTestOutcome,
  type PolicyTestResult,
  type TestFileProblem,
} from './test-cases.js';
export { routePatternCheck } from './check.js';
export { methodFallthroughWarnings, type PolicyWarning } from './warnings.js';
