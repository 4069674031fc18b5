// A bare http-proxy with a keep-alive agent and nothing else: the floor any Node proxy pays.
// Used by proxy-throughput.ts to separate Portcullis's own cost from proxying's.
import { createServer, Agent } from 'node:http';
import httpProxy from 'http-proxy';

const target = process.argv[2];
const agent = new Agent({ keepAlive: true, maxSockets: 64 });
const proxy = httpProxy.createProxyServer({ target, agent });
proxy.on('error', (_e, _req, res) => {
  if ('writeHead' in res && !res.headersSent) res.writeHead(502);
  res.end();
});
const server = createServer((req, res) => proxy.web(req, res));
server.listen(0, '127.0.0.1', () => {
  const a = server.address() as { port: number };
  process.stdout.write(`bare proxy listening on http://127.0.0.1:${a.port}\n`);
});
process.once('SIGTERM', () => process.exit(0));
