export { loadConfig, parseConfig, ConfigError, formatProblem, interpolate, locateInFile, type ConfigProblem, type ConfigCheck } from './load.js';
export { parseDuration, formatDuration } from './duration.js';
export type { Config, RouteConfig, UpstreamConfig, Access, IdentityHeaders, ListenAddr } from './schema.js';
