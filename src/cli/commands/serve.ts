import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { formatProblem } from '../../config/index.js';
import { checkConfigFile } from '../../preflight.js';
import { createApp, type App } from '../../app.js';
import { UsageError, parseArgs } from '../args.js';
import { configPath, type Io } from '../io.js';

/**
 * Past the grace, the teardown's bounded steps get this long; then the process exits whatever
 * still holds on, so a stop always ends within the grace plus this margin.
 */
const EXIT_MARGIN_MS = 5000;

/** `portcullis serve`: runs the gateway until SIGTERM/SIGINT (drain, then exit 0); SIGHUP reloads. */
export async function run(argv: string[], io: Io): Promise<number> {
  const p = parseArgs(argv, { valued: ['config'] });
  if (p.positionals.length) throw new UsageError(`serve takes no arguments (got "${p.positionals[0]}")`);
  const file = configPath(p, io);
  // Every check, in one pass, by the very function `config check` runs; before any worker is
  // forked (a worker refused at start would be replaced forever) and before anything is opened.
  const { config, warnings } = await checkConfigFile(file, io.env);
  if (cluster.isPrimary) for (const w of warnings) io.err(`${formatProblem({ ...w, message: `warning: ${w.message}` })}\n`);
  const workers = config.workers === 'auto' ? availableParallelism() : config.workers;
  if (workers > 1 && cluster.isPrimary) return supervise(workers, config.shutdown_grace, io);

  // Signals are ours from here on: a SIGTERM during start-up stops the gateway as soon as it is
  // up, rather than the default handler exiting 143 with nothing closed; a second signal while
  // draining exits at once.
  let app: App | undefined;
  let signalled: string | undefined;
  let finished!: () => void;
  const done = new Promise<void>((resolve) => {
    finished = resolve;
  });
  const beginStop = (a: App, signal: string) => {
    // The grace of the config in force now (a reload may have changed it).
    const grace = a.currentConfig().shutdown_grace;
    a.log.info({ event: 'shutdown', signal, grace_ms: grace }, 'draining in-flight requests');
    setTimeout(() => exitNow(a, 'shutdown overran the grace; exiting now'), grace + EXIT_MARGIN_MS).unref();
    a.stop(grace).then(finished, (e) => {
      a.log.error({ event: 'shutdown_failed', err: (e as Error).message }, 'shutdown failed');
      finished();
    });
  };
  const onSignal = (signal: string) => {
    if (signalled) return exitNow(app, `second ${signal} while draining; exiting now`);
    signalled = signal;
    if (app) beginStop(app, signal);
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  // A reload once draining has begun would build pools that nothing closes.
  process.on('SIGHUP', () => void (signalled ? undefined : app?.reload(file)));

  app = await createApp({ config, env: io.env, announce: (l) => io.err(`${l}\n`) });
  await app.start();
  if (signalled) beginStop(app, signalled);
  await done;
  app.log.flush?.();
  return 0;
}

/** The backstop: whatever still holds on is dropped, and the exit is still a clean 0. */
function exitNow(app: App | undefined, why: string): void {
  app?.log.warn({ event: 'shutdown_forced' }, why);
  app?.log.flush?.();
  process.exit(0);
}

/**
 * The node:cluster primary: forks the workers (they share the listening sockets), replaces a
 * worker that dies unexpectedly, forwards SIGHUP, and on SIGTERM/SIGINT lets every worker
 * drain before exiting 0 (workers still alive past the grace and margin are killed). A worker
 * that refuses to start (exit 2: bad input) ends the primary with exit 2 instead of a restart loop.
 */
function supervise(count: number, graceMs: number, io: Io): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const alive = () => Object.values(cluster.workers ?? {}).filter((w) => w !== undefined);
    const stop = (signal: NodeJS.Signals, code = 0) => {
      if (stopping) return;
      stopping = true;
      for (const w of alive()) w.process.kill(signal);
      const end = () => resolve(code);
      if (alive().length === 0) end();
      cluster.on('exit', () => {
        if (alive().length === 0) end();
      });
      setTimeout(() => {
        for (const w of alive()) w.process.kill('SIGKILL');
        end();
      }, graceMs + EXIT_MARGIN_MS).unref();
    };
    cluster.on('exit', (worker, code, signal) => {
      if (stopping) return;
      if (code === 2) {
        io.err(`portcullis: worker ${worker.process.pid} refused to start (exit 2; its error is above); stopping\n`);
        stop('SIGTERM', 2);
        return;
      }
      io.err(`portcullis: worker ${worker.process.pid} exited (${signal ?? code}); starting another\n`);
      setTimeout(() => {
        if (!stopping) cluster.fork();
      }, 500);
    });
    for (let i = 0; i < count; i++) cluster.fork();
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      if (!stopping) for (const w of alive()) w.process.kill('SIGHUP');
    });
    io.err(`portcullis: started ${count} workers\n`);
  });
}
