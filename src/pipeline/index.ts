/**
 * The proxied request pipeline, one small stage per file: framing (`framing.ts`) → normalize
 * and match (`src/policy`, pure) → authenticate (`src/http/authenticate.ts`) → authorize (the
 * one decision function, `src/policy/decide.ts`) → mutate headers (`mutate.ts`) → forward
 * (`src/proxy`, transport only). `handler.ts` runs them for HTTP requests and upgrades alike.
 * @packageDocumentation
 */
export { createGateway, wantsHtml, type GatewayDeps, type GatewayState, type RequestAuth, type RouteLimiter } from './handler.js';
export { checkFraming } from './framing.js';
export {
  REQUEST_ID_HEADER,
  RequestRecord,
  loggablePath,
  loggedPathOf,
  newRequestId,
  recordOf,
  validRequestId,
  type AccessLine,
} from './access-log.js';
export { createHeaderMutator, methodOverrideValues, METHOD_OVERRIDE_HEADERS, type ForwardIdentity, type HeaderMutator, type HeaderPlan } from './mutate.js';
