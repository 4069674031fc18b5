import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { loadConfig } from '../../config/index.js';
import { assertProductionReady } from '../../config/production.js';
import { routePatternCheck } from '../../policy/index.js';
import { createApp } from '../../app.js';
import { UsageError, parseArgs } from '../args.js';
import { configPath, type Io } from '../io.js';

/** Past the grace, the teardown's own bounded steps get this long before the process exits anyway. */
const EXIT_MARGIN_MS = 8000;

/** `portcullis serve`: runs the gateway until SIGTERM/SIGINT (drain, then exit 0); SIGHUP reloads. */
export async function run(argv: string[], io: Io): Promise<number> {
  const p = parseArgs(argv, { valued: ['config'] });
  if (p.positionals.length) throw new UsageError(`serve takes no arguments (got "${p.positionals[0]}")`);
  const file = configPath(p, io);
  const config = loadConfig(file, io.env, [routePatternCheck]);
  // Before any worker is forked: a worker refused at start would be replaced forever.
  assertProductionReady(config, io.env);
  const workers = config.workers === 'auto' ? availableParallelism() : config.workers;
  if (workers > 1 && cluster.isPrimary) {
    if (!config.storage.redis_url) {
      throw new UsageError(
        `workers: ${config.workers} needs storage.redis_url: in-process state (rate limits, lockouts, revocations, TOTP steps) is not shared between processes`,
      );
    }
    return supervise(workers, config.shutdown_grace, io);
  }
  const app = await createApp({ config, env: io.env, announce: (l) => io.err(`${l}\n`) });
  await app.start();
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      app.log.info({ event: 'shutdown', signal, grace_ms: config.shutdown_grace }, 'draining in-flight requests');
      // The teardown is bounded step by step; this is the backstop, so an orchestrator never
      // has to SIGKILL us: whatever still holds on is dropped, and the exit is still clean.
      setTimeout(() => {
        app.log.warn({ event: 'shutdown_forced' }, 'shutdown overran the grace; exiting now');
        app.log.flush?.();
        resolve();
      }, config.shutdown_grace + EXIT_MARGIN_MS).unref();
      app.stop().then(resolve, (e) => {
        app.log.error({ event: 'shutdown_failed', err: (e as Error).message }, 'shutdown failed');
        resolve();
      });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => app.reload(file));
  });
  app.log.flush?.();
  return 0;
}

/**
 * The node:cluster primary: forks the workers (they share the listening sockets), replaces a
 * worker that dies unexpectedly, forwards SIGHUP, and on SIGTERM/SIGINT lets every worker
 * drain before exiting 0 (workers still alive past the grace and margin are killed).
 */
function supervise(count: number, graceMs: number, io: Io): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const fork = () => cluster.fork();
    for (let i = 0; i < count; i++) fork();
    cluster.on('exit', (worker, code, signal) => {
      if (stopping) {
        if (Object.keys(cluster.workers ?? {}).length === 0) resolve(0);
        return;
      }
      io.err(`portcullis: worker ${worker.process.pid} exited (${signal ?? code}); starting another\n`);
      setTimeout(fork, 500);
    });
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(signal);
      if (Object.keys(cluster.workers ?? {}).length === 0) resolve(0);
      setTimeout(
        () => {
          for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
          resolve(0);
        },
        graceMs + EXIT_MARGIN_MS + 1000,
      ).unref();
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
    });
    io.err(`portcullis: started ${count} workers\n`);
  });
}
