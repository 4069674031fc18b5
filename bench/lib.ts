/**
 * Helpers of the benchmark harness (bench/run.ts): processes, free ports, /proc readings, wrk,
 * raw sockets, and a minimal Chrome DevTools Protocol client (garbage collection and heap
 * figures of a running gateway through its inspector).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { WebSocket } from 'undici';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port. */
export async function waitForPort(port: number, timeoutMs: number, child?: ChildProcess, what = `port ${port}`): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child && child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode}) before listening`);
    const ok = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} not listening after ${timeoutMs} ms`);
    await sleep(50);
  }
}

export interface Proc {
  name: string;
  child: ChildProcess;
  /** File the process's stdout and stderr go to. */
  log: string;
}

/** Spawns a long-running process with stdout+stderr to `log` (never a pipe: nothing must block it). */
export function startProcess(name: string, cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; log: string }): Proc {
  const fd = openSync(opts.log, 'a');
  const child = spawn(cmd, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  return { name, child, log: opts.log };
}

export function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
export async function stopProcess(p: Proc | undefined, graceMs = 5000): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const gone = new Promise<void>((r) => p.child.once('exit', () => r()));
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(t);
}

/** The pids of a process and all its descendants (cluster workers, nginx workers). */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop()!;
    if (!existsSync(`/proc/${p}`)) continue;
    out.push(p);
    try {
      for (const t of readdirSync(`/proc/${p}/task`)) {
        stack.push(...readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
      }
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** CPU seconds (user + system) used so far by a process tree, from /proc/PID/stat (NaN without /proc). */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined || !existsSync(`/proc/${pid}/stat`)) return NaN;
  let total = 0;
  for (const p of processTree(pid)) {
    try {
      // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
      const rest = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');
      total += (Number(rest[11]) + Number(rest[12])) / 100; // USER_HZ is 100 on Linux
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

/** Resident set size of one process in bytes (VmRSS), NaN when unreadable. */
export function rssBytes(pid: number | undefined): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Open file descriptors of one process (NaN when unreadable). */
export function fdCount(pid: number | undefined): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

export function which(cmd: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

// ---------------------------------------------------------------------------------------------
// wrk

export interface WrkResult {
  rps: number;
  requests: number;
  seconds: number;
  /** Latency percentiles in milliseconds. */
  p50: number;
  p99: number;
  /** Non-2xx/3xx responses plus socket errors. */
  errors: number;
  raw: string;
}

function toMs(v: string, unit: string): number {
  const n = Number(v);
  return unit === 'us' ? n / 1000 : unit === 'ms' ? n : unit === 's' ? n * 1000 : unit === 'm' ? n * 60_000 : NaN;
}

export function parseWrk(out: string): WrkResult {
  const pct = (p: string) => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(out);
    return m ? toMs(m[1], m[2]) : NaN;
  };
  const req = /(\d+) requests in ([\d.]+)(us|ms|s|m)/.exec(out);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  if (!req || !rps) throw new Error(`could not read wrk's output:\n${out}`);
  return {
    rps: Number(rps[1]),
    requests: Number(req[1]),
    seconds: toMs(req[2], req[3]) / 1000,
    p50: pct('50'),
    p99: pct('99'),
    errors: (non2xx ? Number(non2xx[1]) : 0) + (sock ? sock.slice(1).reduce((a, x) => a + Number(x), 0) : 0),
    raw: out,
  };
}

export interface WrkOptions {
  url: string;
  seconds: number;
  connections: number;
  threads: number;
  headers?: Record<string, string>;
}

/** One wrk run (asynchronous, so the harness can do other things meanwhile, such as a login storm). */
export function wrk(o: WrkOptions): Promise<WrkResult> {
  const args = [`-t${o.threads}`, `-c${o.connections}`, `-d${o.seconds}s`, '--latency', '--timeout', '10s'];
  for (const [k, v] of Object.entries(o.headers ?? {})) args.push('-H', `${k}: ${v}`);
  args.push(o.url);
  return new Promise((resolve, reject) => {
    const c = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d));
    c.stderr.on('data', (d: Buffer) => (out += d));
    c.once('error', reject);
    c.once('exit', (code) => {
      try {
        if (code !== 0) throw new Error(`wrk exited ${code}:\n${out}`);
        resolve(parseWrk(out));
      } catch (e) {
        reject(e);
      }
    });
  });
}

/** A wrk run with the CPU time the given process trees spent per request (µs). */
export async function measured(o: WrkOptions, cpuPids: (number | undefined)[]): Promise<WrkResult & { cpuUs: number }> {
  const before = cpuPids.map(cpuSeconds);
  const r = await wrk(o);
  const used = cpuPids.map((p, i) => cpuSeconds(p) - before[i]).reduce((a, x) => a + x, 0);
  return { ...r, cpuUs: (used / r.requests) * 1e6 };
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 clients

/**
 * Opens a connection, sends one GET and resolves with the socket once the whole response
 * (Content-Length framed) has arrived; the connection stays open (keep-alive).
 */
export function oneRequest(port: number, path: string, headers: Record<string, string>): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = buf.subarray(0, end).toString('latin1');
      const len = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      if (!/^HTTP\/1\.1 2\d\d /.test(head)) {
        s.destroy();
        reject(new Error(`unexpected answer: ${head.split('\r\n')[0]}`));
        return;
      }
      if (!len) {
        s.destroy();
        reject(new Error('response without Content-Length'));
        return;
      }
      if (buf.length >= end + 4 + Number(len[1])) {
        s.off('data', onData);
        resolve(s);
      }
    };
    s.on('data', onData);
    s.once('error', reject);
    s.write(request(path, headers));
  });
}

export function request(path: string, headers: Record<string, string>): string {
  let h = `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n`;
  for (const [k, v] of Object.entries(headers)) h += `${k}: ${v}\r\n`;
  return `${h}\r\n`;
}

// ---------------------------------------------------------------------------------------------
// Inspector (Chrome DevTools Protocol) client: GC and heap of the gateway, no hook in src/.

export interface Inspector {
  /** Full GC, then process.memoryUsage() of the inspected process. */
  gcAndMemory(): Promise<{ rss: number; heapUsed: number }>;
  close(): void;
}

/** Activates the inspector of `pid` (started with --inspect-port=127.0.0.1:port) with SIGUSR1 and connects. */
export async function attachInspector(pid: number, port: number): Promise<Inspector> {
  process.kill(pid, 'SIGUSR1');
  const deadline = Date.now() + 5000;
  let url: string | undefined;
  while (!url) {
    try {
      const list = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { webSocketDebuggerUrl: string }[];
      url = list[0]?.webSocketDebuggerUrl;
    } catch {
      if (Date.now() > deadline) throw new Error(`inspector of ${pid} not reachable on port ${port}`);
      await sleep(100);
    }
  }
  const ws = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener('open', () => resolve(), { once: true });
    ws.addEventListener('error', () => reject(new Error('inspector WebSocket failed')), { once: true });
  });
  let id = 0;
  const pending = new Map<number, (v: { result?: unknown; error?: { message: string } }) => void>();
  ws.addEventListener('message', (ev) => {
    const msg = JSON.parse(String(ev.data)) as { id?: number; result?: unknown; error?: { message: string } };
    if (msg.id !== undefined) pending.get(msg.id)?.(msg);
  });
  const call = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<unknown>((resolve, reject) => {
      const n = ++id;
      pending.set(n, (m) => {
        pending.delete(n);
        if (m.error) reject(new Error(`${method}: ${m.error.message}`));
        else resolve(m.result);
      });
      ws.send(JSON.stringify({ id: n, method, params }));
    });
  return {
    async gcAndMemory() {
      await call('HeapProfiler.collectGarbage');
      await sleep(200);
      await call('HeapProfiler.collectGarbage');
      const r = (await call('Runtime.evaluate', { expression: 'JSON.stringify(process.memoryUsage())', returnByValue: true })) as { result: { value: string } };
      const m = JSON.parse(r.result.value) as { rss: number; heapUsed: number };
      return { rss: m.rss, heapUsed: m.heapUsed };
    },
    close: () => ws.close(),
  };
}
