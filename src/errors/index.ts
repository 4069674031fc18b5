/**
 * Errors: one registry of codes ({@link Errors}), the {@link GatewayError} that carries one,
 * {@link is} to branch on identity, and the problem+json wire forms.
 */
export { Errors, errorDef, errorAnchor, ERROR_DOCS_PAGE, type ErrorCode, type ErrorDef } from './registry.js';
export { GatewayError, is, unauthenticated, type GatewayErrorOptions } from './gateway-error.js';
export { problemBody, problemType, writeProblem, writeProblemToSocket, type ProblemBody, type SocketProblemOptions } from './problem.js';
