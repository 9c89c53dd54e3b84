// Eager `dr` replication hooked into the HTTP server: after the registry answered a manifest PUT, kick the
// placement kicker (src/placement/kicker.ts) for that repository. Here and not in placement/ because it reads HTTP
// routes and registers a fastify hook, and not in registry/ because the registry stays unaware of placement.
import type { FastifyInstance } from 'fastify';
import type { ReplicationKicker } from '../placement/kicker.js';

/**
 * The repository a registry request pushed a manifest to, from the distribution API's own route
 * (`PUT /v2/<name>/manifests/<reference>` answered 201), or undefined for any other request. Reading the public
 * route keeps the registry unaware of placement.
 */
export function pushedRepository(method: string, url: string, status: number): string | undefined {
  if (method !== 'PUT' || status !== 201) return undefined;
  const path = url.split('?', 1)[0] ?? '';
  return /^\/v2\/(.+)\/manifests\/[^/]+$/.exec(path)?.[1];
}

/** Kicks `kicker` for every manifest push `app` answers (an onResponse hook: after the client has its answer). */
export function replicateAfterPushes(app: FastifyInstance, kicker: ReplicationKicker): void {
  app.addHook('onResponse', async (req, reply) => {
    const repo = pushedRepository(req.method, req.url, reply.statusCode);
    if (repo) kicker.kick(repo);
  });
}
