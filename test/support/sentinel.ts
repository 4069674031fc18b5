import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from './services.js';

/**
 * A private Redis Sentinel deployment for tests: a master, a replica (`--replicaof`) and one
 * `redis-server --sentinel` that monitors them with quorum 1 and a short `down-after` (1 s), all on
 * free ports on 127.0.0.1, no persistence, in a temp dir of their own. The data nodes and the
 * Sentinel can each require a password. `stop()` kills every process it started and removes
 * the dir.
 */

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** True when `redis-server` is on PATH (it also runs as a Sentinel with `--sentinel`). */
export const haveRedisServer = (): boolean => spawnSync('redis-server', ['--version']).status === 0;

export interface SentinelSetOptions {
  /** The master group name. @default 'pcmaster' */
  name?: string;
  /** `requirepass` / `masterauth` of the master and the replica. */
  password?: string;
  /** `requirepass` of the Sentinel. */
  sentinelPassword?: string;
  /** TLS only, everywhere (clients, replication, Sentinel): this self-signed certificate (`selfSigned()`) for 127.0.0.1, also the CA. */
  tls?: { cert: string; key: string };
}

export class SentinelSet {
  readonly name: string;
  readonly dir = mkdtempSync(join(tmpdir(), 'portcullis-sentinel-'));
  /** The data nodes' ports: [first master, first replica]. */
  ports: number[] = [];
  sentinelPort = 0;
  private readonly children = new Map<number, ChildProcess>();
  private readonly clients = new Map<string, Redis>();

  /** With `tls`: the server arguments, the Sentinel config lines and the CA for clients. */
  private readonly tls: { args: string[]; conf: string[]; ca: string } | undefined;

  constructor(private readonly opts: SentinelSetOptions = {}) {
    this.name = opts.name ?? 'pcmaster';
    if (opts.tls) {
      const { cert, key } = opts.tls;
      this.tls = {
        args: ['--tls-cert-file', cert, '--tls-key-file', key, '--tls-ca-cert-file', cert, '--tls-auth-clients', 'no', '--tls-replication', 'yes'],
        conf: [`tls-cert-file ${cert}`, `tls-key-file ${key}`, `tls-ca-cert-file ${cert}`, 'tls-auth-clients no', 'tls-replication yes'],
        ca: readFileSync(cert, 'utf8'),
      };
    }
  }

  /** The CA (the self-signed certificate) clients need with `tls`. */
  get ca(): string | undefined {
    return this.tls?.ca;
  }

  /** Starts master, replica and Sentinel; resolves once the Sentinel sees a synced replica (a failover can then happen). */
  async start(): Promise<void> {
    const [master, replica, sentinel] = [await freePort(), await freePort(), await freePort()];
    this.ports = [master, replica];
    this.sentinelPort = sentinel;
    const auth = this.opts.password ? ['--requirepass', this.opts.password, '--masterauth', this.opts.password] : [];
    const common = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning', '--dir', this.dir, ...auth];
    // Redis 7 waits 5 s before a diskless full sync (for more replicas to join): not here.
    common.push('--repl-diskless-sync-delay', '0');
    const listen = (port: number) => (this.tls ? ['--port', '0', '--tls-port', String(port), ...this.tls.args] : ['--port', String(port)]);
    this.spawn(master, [...listen(master), ...common]);
    this.spawn(replica, [...listen(replica), '--replicaof', '127.0.0.1', String(master), ...common]);
    await this.until('the replica to sync', async () => /master_link_status:up/.test(await this.node(replica).info('replication')));

    const conf = join(this.dir, 'sentinel.conf');
    writeFileSync(
      conf,
      [
        ...(this.tls ? ['port 0', `tls-port ${sentinel}`, ...this.tls.conf] : [`port ${sentinel}`]),
        'bind 127.0.0.1',
        `dir ${this.dir}`,
        `logfile ${join(this.dir, 'sentinel.log')}`,
        ...(this.opts.sentinelPassword ? [`requirepass ${this.opts.sentinelPassword}`] : []),
        `sentinel monitor ${this.name} 127.0.0.1 ${master} 1`,
        `sentinel down-after-milliseconds ${this.name} 1000`,
        `sentinel failover-timeout ${this.name} 5000`,
        ...(this.opts.password ? [`sentinel auth-pass ${this.name} ${this.opts.password}`] : []),
        '',
      ].join('\n'),
    );
    this.spawn(sentinel, [conf, '--sentinel']);
    await this.until('the Sentinel to see a healthy replica', async () => {
      const replicas = (await this.sentinel().call('SENTINEL', 'REPLICAS', this.name)) as string[][];
      return replicas.some((r) => {
        const f = fields(r);
        return f.port === String(replica) && f['master-link-status'] === 'ok' && !/s_down|disconnected/.test(f.flags ?? '');
      });
    });
  }

  /** `host:port` of the master, as the Sentinel says now. */
  async master(): Promise<{ host: string; port: number }> {
    const [host, port] = (await this.sentinel().call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', this.name)) as [string, string];
    return { host, port: Number(port) };
  }

  /** A client of one data node (cached; closed by `stop()`). */
  node(port: number, db = 0): Redis {
    return this.client(`${port}/${db}`, () => ({ port, password: this.opts.password, db }));
  }

  /** A client of the Sentinel (cached; closed by `stop()`). */
  sentinel(): Redis {
    return this.client('sentinel', () => ({ port: this.sentinelPort, password: this.opts.sentinelPassword }));
  }

  private client(key: string, make: () => { port: number; password?: string; db?: number }): Redis {
    const have = this.clients.get(key);
    if (have && have.status !== 'end') return have;
    const c = new Redis({
      host: '127.0.0.1',
      ...make(),
      ...(this.tls ? { tls: { ca: this.tls.ca } } : {}),
      maxRetriesPerRequest: 1,
      retryStrategy: () => null,
    });
    c.on('error', () => undefined);
    this.clients.set(key, c);
    return c;
  }

  /** SIGKILL of the process on `port`. */
  async kill(port: number): Promise<void> {
    const child = this.children.get(port);
    this.children.delete(port);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }

  /** Kills everything it started, closes its clients, removes its temp dir. */
  async stop(): Promise<void> {
    for (const c of this.clients.values()) c.disconnect();
    this.clients.clear();
    await Promise.all([...this.children.keys()].map((port) => this.kill(port)));
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** The Sentinel's log (for failure messages). */
  sentinelLog(): string {
    try {
      return spawnSync('tail', ['-n', '40', join(this.dir, 'sentinel.log')]).stdout.toString();
    } catch {
      return '';
    }
  }

  private spawn(port: number, args: string[]): void {
    const child = spawn('redis-server', args, { stdio: 'ignore' });
    child.on('error', () => undefined);
    this.children.set(port, child);
  }

  private async until(what: string, probe: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
    const start = Date.now();
    let last: unknown;
    for (;;) {
      try {
        if (await probe()) return;
      } catch (e) {
        last = e;
      }
      if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}${last ? ` (${(last as Error).message})` : ''}\n${this.sentinelLog()}`);
      await sleep(50);
    }
  }
}

/** A flat [k1, v1, k2, v2…] reply as an object. */
function fields(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]] = flat[i + 1];
  return out;
}
