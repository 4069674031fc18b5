/**
 * The transport's error writers: the problem+json wire forms of src/errors, used where the
 * proxy has no responder to hand an error to (a response already started, an unknown upstream,
 * a failed upgrade on a raw socket). Every other error answer goes through the http layer's
 * one responder, which the proxy receives as `sendError`.
 */
export { problemBody, problemType, writeProblem, writeProblemToSocket, type ProblemBody } from '../errors/problem.js';
