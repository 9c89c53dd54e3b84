// Closes connections on which a client has gone quiet mid-exchange: it stopped sending a request body it started
// (a trickling or stalled upload), or stopped reading a response (a stalled pull). Node's own socket timeout would
// also close a connection while the server is still working on a request it received completely (committing a large
// blob to S3 can take a while with no byte on the wire), so timed-out sockets are judged here instead: only those
// waiting on the client are closed. Together with `requestTimeout` (the whole request must arrive within a bound) a
// client that trickles a byte now and then cannot hold a connection, a session and a spool forever.
import type { Socket } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { registryConnectionTimeoutsTotal } from '../telemetry/metrics.js';

interface Exchange {
  req: IncomingMessage;
  res: ServerResponse;
}

/** Arms an idle timeout of `idleMs` on every connection of `app` (0 = off). */
export function closeIdleConnections(app: FastifyInstance, idleMs: number): void {
  if (idleMs <= 0) return;
  const current = new WeakMap<Socket, Exchange>();
  app.addHook('onRequest', async (request, reply) => {
    current.set(request.raw.socket, { req: request.raw, res: reply.raw });
  });
  const server = app.server;
  server.setTimeout(idleMs, (socket: Socket) => {
    const ex = current.get(socket);
    // Between requests (keep-alive): node's keepAliveTimeout closes it; nothing is held meanwhile.
    if (!ex || ex.res.writableFinished) return;
    // The request arrived and no answer has started: the server is working on it, which is not the client's idling.
    if (ex.req.complete && !ex.res.headersSent) return;
    registryConnectionTimeoutsTotal.inc();
    app.log.warn({ client: socket.remoteAddress, method: ex.req.method, url: ex.req.url?.slice(0, 200), idleMs, receiving: !ex.req.complete }, 'connection closed: the client sent or read nothing for the idle timeout');
    socket.destroy();
  });
}
