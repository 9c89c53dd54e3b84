// The long-running service: the registry plugin plus /metrics (this process's metrics, see telemetry/metrics-registry.ts),
// /healthz (the process answers) and /readyz (the store answers), request logs through pino, TLS when given a
// certificate. Building is separate from listening so tests can `inject` or `listen(0)` the same server.
import { readFileSync } from 'node:fs';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { exportProcessDefaults, processMetrics } from '@transship/core/metrics-registry';
import '../telemetry/metrics.js';
import { log as rootLog } from '@transship/core/log';
import { registryPlugin, type RegistryPluginOptions } from '../registry/plugin.js';
import { digestOf } from '@transship/core/digest';
import { closeIdleConnections } from './idle-timeout.js';

export interface ServerOptions extends RegistryPluginOptions {
  tls?: { cert: string; key: string } | undefined;
  logger?: Logger | undefined;
  /** How long /readyz waits for the store (ms). */
  readyTimeoutMs?: number | undefined;
  /** A request must arrive completely within this long (s; default 3600, 0 = off). */
  requestTimeoutSeconds?: number | undefined;
  /** Close a connection whose client sends or reads nothing mid-exchange for this long (s; default 120, 0 = off). */
  idleTimeoutSeconds?: number | undefined;
}

export async function buildServer(opts: ServerOptions): Promise<FastifyInstance> {
  // Memory, CPU and event-loop lag for the serve dashboard (deploy/grafana/transship-serve-dashboard.json).
  exportProcessDefaults();
  // Typed as fastify's logger so the instance keeps fastify's default generics (pino's Logger is wider).
  const logger: FastifyBaseLogger = (opts.logger ?? rootLog).child({ component: 'server' });
  const app = Fastify({
    loggerInstance: logger,
    // Shutdown must not wait for a client that keeps a connection open: in-flight uploads are cancelled anyway.
    forceCloseConnections: true,
    // A whole request (a monolithic upload included) must arrive within this; a trickling client is cut off here
    // or by the idle timeout (idle-timeout.ts), whichever comes first.
    requestTimeout: (opts.requestTimeoutSeconds ?? 3600) * 1000,
    // Keep `/v2` and `/v2/` distinct from fastify's own normalisation; names are parsed by the registry.
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 2048 },
    ...(opts.tls ? { https: { cert: readFileSync(opts.tls.cert), key: readFileSync(opts.tls.key) } } : {}),
  });

  app.get('/healthz', async (_req, reply) => reply.code(200).send({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    try {
      // Any answer (present or absent) proves the store is reachable with our credentials.
      await opts.store.statBlob(digestOf('transship readiness probe'), { signal: AbortSignal.timeout(opts.readyTimeoutMs ?? 5000) });
      return reply.code(200).send({ status: 'ready', store: opts.store.name });
    } catch (err) {
      return reply.code(503).send({ status: 'unavailable', store: opts.store.name, error: (err as Error).message.split('\n')[0] });
    }
  });
  app.get('/metrics', async (_req, reply) => {
    const registry = processMetrics();
    return reply.code(200).type(registry.contentType).send(await registry.metrics());
  });

  closeIdleConnections(app, (opts.idleTimeoutSeconds ?? 120) * 1000);
  await app.register(registryPlugin, opts);
  return app;
}
