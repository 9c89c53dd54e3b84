// A small HTTP proxy on loopback in front of an upstream registry, for mirror tests and the mirror benchmark: it
// counts requests (method + path, query dropped) and bytes sent to clients, and can play a broken upstream —
// answer 503 to everything (`down`), refuse connections (`stop()`), or corrupt one byte of chosen responses
// (`corrupt`), which is how a wrong digest from an upstream is tested against a real registry behind it.
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Transform } from 'node:stream';

export interface CountingProxy {
  url: string;
  host: string;
  /** `METHOD /path` → count. */
  counts: Map<string, number>;
  /** Body bytes sent to clients. */
  bytes: number;
  /** Answer every request with 503 while true. */
  down: boolean;
  /** Responses whose request path matches get one byte flipped. */
  corrupt: RegExp | undefined;
  count(method: string, pathRe: RegExp): number;
  reset(): void;
  stop(): Promise<void>;
}

export async function startCountingProxy(target: string): Promise<CountingProxy> {
  const to = new URL(target);
  const proxy: CountingProxy = {
    url: '',
    host: '',
    counts: new Map(),
    bytes: 0,
    down: false,
    corrupt: undefined,
    count(method, pathRe) {
      let n = 0;
      for (const [k, v] of this.counts) {
        const [m, p] = k.split(' ') as [string, string];
        if (m === method && pathRe.test(p)) n += v;
      }
      return n;
    },
    reset() {
      this.counts.clear();
      this.bytes = 0;
    },
    stop: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const key = `${req.method} ${path}`;
    proxy.counts.set(key, (proxy.counts.get(key) ?? 0) + 1);
    if (proxy.down) {
      res.writeHead(503, { 'content-type': 'application/json', 'content-length': '2' }).end('{}');
      return;
    }
    const headers = { ...req.headers, host: to.host };
    const up = request({ host: to.hostname, port: to.port, method: req.method, path: req.url, headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      let body: NodeJS.ReadableStream = ur;
      if (proxy.corrupt?.test(path)) {
        let flipped = false;
        body = ur.pipe(
          new Transform({
            transform(chunk: Buffer, _enc, cb) {
              if (!flipped && chunk.length) {
                const c = Buffer.from(chunk);
                c[0] = (c[0] ?? 0) ^ 0xff;
                flipped = true;
                cb(null, c);
              } else cb(null, chunk);
            },
          }),
        );
      }
      body.on('data', (c: Buffer) => (proxy.bytes += c.length));
      body.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as { port: number }).port;
  proxy.host = `127.0.0.1:${port}`;
  proxy.url = `http://${proxy.host}`;
  return proxy;
}
