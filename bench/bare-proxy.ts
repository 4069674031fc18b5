// A bare undici Pool forwarder, no auth and nothing else: the floor any Node proxy built on
// undici pays. bench/run.ts drives it beside the gateway to separate Portcullis's own cost
// from proxying's.   node --import tsx bench/bare-proxy.ts http://127.0.0.1:UPSTREAM 127.0.0.1:PORT
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { pipeline } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';

const [target, listen = '127.0.0.1:0'] = process.argv.slice(2);
const pool = new Pool(target, { connections: 64, pipelining: 1 });
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host']);
const strip = (h: IncomingHttpHeaders | Record<string, string | string[] | undefined>) => {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP.has(k)) out[k] = v;
  return out;
};

const server = createServer((req, res) => {
  const ac = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  pool
    .request({
      method: req.method as Dispatcher.HttpMethod,
      path: req.url ?? '/',
      headers: strip(req.headers),
      body: hasBody ? req : undefined,
      signal: ac.signal,
    })
    .then(
      ({ statusCode, headers, body }) => {
        res.writeHead(statusCode, strip(headers));
        pipeline(body, res, () => undefined);
      },
      () => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      },
    );
});
server.keepAliveTimeout = 65_000;
const [host, port] = [listen.slice(0, listen.lastIndexOf(':')), Number(listen.slice(listen.lastIndexOf(':') + 1))];
server.listen(port, host, () => process.stdout.write(`bare undici forwarder listening on ${host}:${(server.address() as { port: number }).port}\n`));
process.once('SIGTERM', () => process.exit(0));
