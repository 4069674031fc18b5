export {
  loadConfig,
  parseConfig,
  inspectConfig,
  inspectConfigFile,
  ConfigError,
  formatProblem,
  interpolate,
  locateInFile,
  type ConfigProblem,
  type ConfigInspection,
} from './load.js';
export { salvage, type ConfigCheck, type ConfigDraft, type ConfigFinding } from './checks.js';
export { parseDuration, formatDuration } from './duration.js';
export type { Config, RouteConfig, UpstreamConfig, Access, IdentityHeaders, ListenAddr } from './schema.js';
