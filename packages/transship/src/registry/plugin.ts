// The registry as a fastify plugin: one wildcard route under /v2/ (repository names contain slashes, so the path
// is parsed by paths.ts, not by fastify params), a dispatch table by (resource, method), one error path that
// writes spec error bodies, and the /token endpoint when auth is on.
//
// Request bodies are never parsed by fastify here: uploads stream from `request.raw` to the spool, manifests are
// read with a size limit by their handler. Every handler gets an AbortSignal that fires when the client goes away,
// and passes it to every store call.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { withSpan } from '@transship/core/tracing';
import { registryRequestDurationSeconds, registryRequestsTotal } from '../telemetry/metrics.js';
import { RegistryError, toErrorResponse } from './errors.js';
import { RegistryContext, type Call, type Handler, type RegistryOptions } from './context.js';
import { parseTarget, requiredAction, type Target } from './paths.js';
import { deleteBlob, getBlob } from './blobs.js';
import { cancelUpload, finishUpload, patchUpload, startUpload, uploadStatus } from './upload-routes.js';
import { deleteManifest, getManifest, putManifest } from './manifests.js';
import { catalog, listTags, referrers } from './listing.js';
import type { Identity } from './auth.js';
import { isValidRepoName } from '@transship/core/names';

const base: Handler = async (call) => {
  call.reply.code(200).send({});
};

const ROUTES: Record<Target['kind'], Partial<Record<string, Handler>>> = {
  base: { GET: base, HEAD: base },
  catalog: { GET: catalog },
  tags: { GET: listTags },
  manifest: { GET: getManifest, HEAD: getManifest, PUT: putManifest, DELETE: deleteManifest },
  blob: { GET: getBlob, HEAD: getBlob, DELETE: deleteBlob },
  uploads: { POST: startUpload },
  upload: { GET: uploadStatus, PATCH: patchUpload, PUT: finishUpload, DELETE: cancelUpload },
  referrers: { GET: referrers },
};

/** The token realm clients are sent to: configured, or this server's own /token as the client reached it. */
function realmOf(ctx: RegistryContext, request: FastifyRequest): string {
  const own = `${request.protocol}://${request.host}/token`;
  return ctx.auth?.realm(own) ?? own;
}

function sendError(request: FastifyRequest, reply: FastifyReply, err: unknown, target?: Target, client?: string): void {
  const res = toErrorResponse(err);
  if (res.internal) request.log.error({ err }, 'registry request failed');
  else request.log.info({ code: res.body.errors[0]?.code, message: res.body.errors[0]?.message }, 'registry request rejected');
  if (res.status === 413) {
    const detail = res.body.errors[0]?.detail as { limit?: unknown } | undefined;
    request.log.warn(
      { route: target?.kind ?? 'unknown', repository: target && 'name' in target ? target.name : undefined, limit: detail?.limit, client: client ?? request.ip, method: request.method },
      'request body refused: over the size limit',
    );
  }
  if (reply.sent || reply.raw.headersSent) {
    reply.raw.destroy();
    return;
  }
  // A body we stopped reading (refused mid-stream, or never read) leaves the connection in an unknown state: the
  // client may still be sending it, and the next request on the connection would wait behind it. Say so and close
  // once this answer is out, so the client opens a fresh connection instead of hanging or writing into a dead pipe.
  // (node ends the socket after a response that says `Connection: close`.)
  if (!request.raw.complete) reply.header('connection', 'close');
  reply.code(res.status).headers(res.headers).type('application/json');
  if (request.method === 'HEAD') reply.header('content-length', '0').send();
  else reply.send(JSON.stringify(res.body));
}

export interface RegistryPluginOptions extends RegistryOptions {
  /** Receives the context (tests inspect sessions; the server closes it on shutdown). */
  onContext?: ((ctx: RegistryContext) => void) | undefined;
}

export async function registryPlugin(app: FastifyInstance, opts: RegistryPluginOptions): Promise<void> {
  const ctx = new RegistryContext(opts);
  opts.onContext?.(ctx);
  app.addHook('onClose', async () => ctx.close());
  await ctx.blobCache?.init(); // an unusable cache directory stops the start here, with the fix in the message
  void ctx.sweepStaged(); // in the background: it never fails and never delays serving

  // Bodies stay unread streams: handlers consume `request.raw` themselves (spool or bounded buffer).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null));

  const operations = new WeakMap<FastifyRequest, { op: string; started: number }>();
  app.addHook('onResponse', async (request, reply) => {
    const o = operations.get(request);
    if (!o) return;
    registryRequestsTotal.inc({ method: request.method, operation: o.op, status: String(reply.statusCode) });
    registryRequestDurationSeconds.observe({ method: request.method, operation: o.op }, (performance.now() - o.started) / 1000);
  });

  // Returns the reply: an async fastify handler that resolves to undefined while a streamed send is still in its
  // onSend phase gets an empty body sent over it.
  const handle = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const started = performance.now();
    const controller = new AbortController();
    const onClose = (): void => {
      if (!reply.raw.writableFinished) controller.abort(new Error('client closed the connection'));
    };
    // Stays attached after the handler returns: a streamed blob GET is still running then.
    reply.raw.once('close', onClose);
    reply.header('docker-distribution-api-version', 'registry/2.0');
    const url = request.raw.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const query = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
    const record = { op: 'unknown', started };
    const client = request.ip; // read now: a refused body may have closed the socket by the time it is logged
    operations.set(request, record);
    let target: Target | undefined;
    try {
      target = parseTarget(path, request.method);
      if (!target) throw new RegistryError('UNSUPPORTED', `no such endpoint: ${request.method} ${path.slice(0, 200)}`, {}, 404);
      const op = target.kind;
      record.op = op;
      let handler = ROUTES[target.kind][request.method];
      if (!handler) throw new RegistryError('UNSUPPORTED', `${request.method} is not supported on ${target.kind}`, {}, 405);
      // A mirrored repository (src/mirror) is renamed to where it is stored before auth sees it.
      const mirrored = ctx.mirror && 'name' in target ? ctx.mirror.intercept(target.name, target.kind, request.method, query, handler) : undefined;
      if (mirrored && 'name' in target) {
        target = { ...target, name: mirrored.name };
        handler = mirrored.handler;
      }
      const identity = await authenticate(ctx, request, target, query);
      const call: Call = { ctx, target, method: request.method, query, request, reply, signal: controller.signal, identity };
      const attrs = { 'http.method': request.method, 'registry.operation': op, ...('name' in target ? { 'registry.repository': target.name } : {}) };
      await withSpan(`registry.${op}`, attrs, () => handler(call));
    } catch (err) {
      sendError(request, reply, err, target, client);
    }
    return reply;
  };

  app.route({ method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'], url: '/v2', handler: handle, exposeHeadRoute: false });
  app.route({ method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'], url: '/v2/*', handler: handle, exposeHeadRoute: false });

  // An external token service (serve.auth.token) issues tokens instead: then there is no /token here.
  if (ctx.auth && !ctx.auth.external) {
    const auth = ctx.auth;
    app.get('/token', async (request, reply) => {
      try {
        const query = new URLSearchParams((request.raw.url ?? '').split('?')[1] ?? '');
        const body = await auth.issueToken(request.headers.authorization, query.getAll('scope').flatMap((s) => s.split(' ')), realmOf(ctx, request));
        reply.code(200).header('cache-control', 'no-store').send(body);
      } catch (err) {
        sendError(request, reply, err);
      }
      return reply;
    });
  }
}

async function authenticate(ctx: RegistryContext, request: FastifyRequest, target: Target, query: URLSearchParams): Promise<Identity> {
  if (!ctx.auth) return { kind: 'anonymous' };
  const realm = realmOf(ctx, request);
  const identity = await ctx.auth.identify(request.headers.authorization, realm);
  if (target.kind === 'base' || target.kind === 'catalog') {
    // The base endpoint is how clients discover auth: anonymous callers get the challenge.
    if (identity.kind === 'anonymous') throw ctx.auth.challenge(realm, target.kind === 'catalog' ? ['registry:catalog:*'] : [], 'authentication required');
    return identity;
  }
  const action = requiredAction(target, request.method);
  if (action && 'name' in target) ctx.auth.authorize(identity, target.name, action, realm);
  const from = query.get('from');
  if (target.kind === 'uploads' && request.method === 'POST' && query.get('mount') !== null && from !== null && isValidRepoName(from)) {
    ctx.auth.authorizeMount(identity, target.name, from, realm);
  }
  return identity;
}
