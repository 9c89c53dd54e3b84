// A load balancer that spreads requests, not connections: each HTTP request goes to the next backend in turn, even
// on a kept-alive client connection — what an HTTP ingress or a service mesh does, and what breaks registries whose
// upload sessions live in one process. Used to push through several `serve` instances with real clients.
import { createServer, request, Agent, type IncomingMessage, type ServerResponse } from 'node:http';

export interface RoundRobinProxy {
  /** `127.0.0.1:PORT`. */
  host: string;
  /** Requests sent to each backend so far, by index, with method and path (query left out). */
  log: Array<{ backend: number; method: string; path: string }>;
  close(): Promise<void>;
}

export async function startRoundRobinProxy(backends: readonly string[]): Promise<RoundRobinProxy> {
  const agent = new Agent({ keepAlive: true });
  const log: RoundRobinProxy['log'] = [];
  let next = 0;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const backend = next++ % backends.length;
    const target = new URL(backends[backend] as string);
    log.push({ backend, method: req.method ?? 'GET', path: (req.url ?? '/').split('?')[0] ?? '/' });
    const upstream = request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: req.headers.host }, agent },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`proxy: ${err.message}`);
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    host: `127.0.0.1:${port}`,
    log,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}
