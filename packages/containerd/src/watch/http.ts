// The watcher's HTTP face: /metrics (this process's metrics: containerd's and the shared retry's), /healthz (200 while subscribed to
// containerd, 503 while reconnecting — a liveness probe should not restart the watcher for containerd's sake, a
// readiness probe may), /findings (recent findings as JSON). node:http, not fastify: this is three routes in a node
// agent whose memory budget matters.
import { createServer, type Server } from 'node:http';
import { processMetrics } from '@transship/core/metrics-registry';
import '../metrics.js';
import type { Watcher } from './watcher.js';

export async function serveWatchHttp(watcher: Watcher, host: string, port: number): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      const registry = processMetrics();
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(err as Error).message}\n`),
      );
      return;
    }
    if (path === '/healthz') {
      const s = watcher.status();
      res.writeHead(s.subscribed ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ status: s.subscribed ? 'ok' : 'reconnecting', ...s }) + '\n');
      return;
    }
    if (path === '/findings') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ findings: watcher.findings }) + '\n');
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz or /findings\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  return {
    server,
    port: typeof addr === 'object' && addr ? addr.port : port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
