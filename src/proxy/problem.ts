/**
 * The problem+json wire forms of src/errors, re-exported for the transport. Every error answer
 * of the proxy goes through the responder it receives as `respond` (which writes these forms
 * and logs once); the proxy writes one directly only if that responder throws.
 */
export { problemBody, problemType, writeProblem, writeProblemToSocket, type ProblemBody } from '../errors/problem.js';
