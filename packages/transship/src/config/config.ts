// Configuration: a YAML file, then environment variables, then flags — each layer overrides the one before, and
// the merged result is validated once with precise messages (path of the bad field + what was expected).
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { TransshipError } from '@transship/core/errors';
import { DURATION_FORMS, durationProblem } from '@transship/core/duration';
import { REGION_NAME_RE, REGION_NAME_RULE } from '@transship/core/names';

const positiveInt = z.number().int().positive();

const s3Schema = z
  .object({
    endpoint: z.string().url().optional(),
    /** Signing region (AWS_REGION). */
    region: z.string().min(1).optional(),
    accessKeyId: z.string().min(1).optional(),
    secretAccessKey: z.string().min(1).optional(),
    sessionToken: z.string().min(1).optional(),
    multipartThreshold: positiveInt.optional(),
    partSize: positiveInt.min(5 * 1024 * 1024, 'partSize must be at least 5 MiB (S3 minimum)').optional(),
    partConcurrency: positiveInt.max(64).optional(),
  })
  .strict();

const regionSchema = z
  .object({
    /** `s3://bucket/prefix` or `dir:/path`. */
    store: z.string().min(1),
    s3: s3Schema.optional(),
  })
  .strict();

/** `transship serve` (the registry). */
const serveSchema = z
  .object({
    /** HOST:PORT to listen on. */
    listen: z.string().min(1).optional(),
    /** Parent directory for upload spool files (default: the OS temp dir). */
    uploadDir: z.string().min(1).optional(),
    /** Largest blob a client may upload, bytes (413 SIZE_INVALID above). */
    maxBodyBytes: positiveInt.optional(),
    /** Largest manifest accepted, bytes (default 4 MiB). */
    maxManifestBytes: positiveInt.optional(),
    /** Upload sessions idle this long are removed. */
    uploadIdleSeconds: positiveInt.optional(),
    /** Open upload sessions at most; more are refused with 429 (default 1000). */
    maxUploadSessions: positiveInt.optional(),
    /** Bytes held in all upload spools together at most; more is refused with 429 (default: unbounded). */
    maxSpoolBytes: positiveInt.optional(),
    /** A request must arrive completely within this long (node's requestTimeout; default 3600; 0 = off). */
    requestTimeoutSeconds: z.number().int().min(0).optional(),
    /**
     * A connection on which a client sends nothing (mid-request) or reads nothing (mid-response) for this long is
     * closed (default 120; 0 = off). Time the server spends working on a received request does not count.
     */
    idleTimeoutSeconds: z.number().int().min(0).optional(),
    /** S3 stores: sessions past this many bytes stream to S3 while they arrive (default 32 MiB; 0 = off). */
    streamUploadsAfterBytes: z.number().int().min(0).optional(),
    /**
     * S3 stores: upload sessions any instance sharing the store can continue (replicas behind a load balancer that
     * spreads requests, rolling updates). On by default; `enabled: false` keeps sessions in the instance that took
     * the POST (saves one PutObject per PATCH; clients must then be pinned to an instance). `secret` signs the
     * sessions' state tokens (also TRANSSHIP_UPLOAD_SECRET); without it, one is generated and kept in the store.
     */
    sharedUploads: z.object({ enabled: z.boolean().optional(), secret: z.string().min(16, 'must have at least 16 characters').optional() }).strict().optional(),
    /**
     * S3 stores: answer blob GETs with a redirect to a presigned URL (clients must reach the S3 endpoint); the
     * URL stays valid for expiresInSeconds (default 1200).
     */
    redirect: z.object({ expiresInSeconds: z.number().int().min(1).max(604800).optional() }).strict().optional(),
    /**
     * Remote stores (S3): blob bytes this instance received or served are kept on local disk, and GETs of them are
     * answered from there (src/registry/blob-cache.ts). dir defaults to `<uploadDir>/transship-blob-cache` (the same
     * filesystem, so an upload enters by hard link), or `<os temp dir>/transship-blob-cache-<uid>` without an
     * uploadDir — left off when that is tmpfs. The directory must belong to the server's user (it is made 0700).
     * maxBytes defaults to 2 GiB, 0 turns the cache off.
     */
    blobCache: z.object({ dir: z.string().min(1).optional(), maxBytes: z.number().int().min(0).optional() }).strict().optional(),
    /** Allow DELETE of manifests, tags and blob links (405 UNSUPPORTED otherwise). */
    allowDelete: z.boolean().optional(),
    /** Record blob→repository links (default: on when auth is configured). */
    blobLinks: z.boolean().optional(),
    /**
     * Record manifest GETs as pull markers (`repos/<name>/_pulled/…`) for retention's pulledWithin: one background
     * PutObject per repository and manifest per day (or per eighth of the shortest pulledWithin) per instance. On by
     * default, so a pulledWithin rule added later finds the pull history it needs.
     */
    recordPulls: z.boolean().optional(),
    tls: z.object({ cert: z.string().min(1), key: z.string().min(1) }).strict().optional(),
    auth: z
      .object({
        realm: z.string().url().optional(),
        service: z.string().min(1).optional(),
        tokenSecret: z.string().min(16, 'tokenSecret must have at least 16 characters').optional(),
        tokenTtlSeconds: positiveInt.optional(),
        htpasswd: z.string().min(1).optional(),
        users: z.record(z.string(), z.string()).optional(),
        access: z
          .array(z.object({ users: z.array(z.string()).min(1), repositories: z.array(z.string()).min(1), actions: z.array(z.enum(['pull', 'push', 'delete'])).min(1) }).strict())
          .optional(),
        basicOnly: z.boolean().optional(),
        /**
         * Tokens issued by an external service (Docker token specification: docker_auth, GitLab, Harbor, Keycloak):
         * clients are sent to `realm`; tokens must name `issuer` (iss) and `service` (aud) and be signed by the key of
         * `certificate` (PEM file; or carry an x5c chain ending at it) or a key of `jwks` (URL or file). transship's
         * own /token is off then.
         */
        token: z
          .object({
            realm: z.string().url(),
            service: z.string().min(1),
            issuer: z.string().min(1),
            jwks: z.string().min(1).optional(),
            certificate: z.string().min(1).optional(),
          })
          .strict()
          .refine((t) => Boolean(t.jwks) !== Boolean(t.certificate), { message: 'set exactly one of jwks (URL or file) and certificate (PEM file)' })
          .optional(),
      })
      .strict()
      .superRefine((a, ctx) => {
        if (!a.token) return;
        for (const key of ['realm', 'service', 'tokenSecret', 'tokenTtlSeconds'] as const) {
          if (a[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `not used with auth.token (the external service issues the tokens${key === 'realm' || key === 'service' ? `; set auth.token.${key}` : ''})` });
        }
      })
      .optional(),
  })
  .strict();

/** Durations (src/core/duration.ts): `500ms`, `30s`, `5m`, `1h`, `7d` or plain seconds. */
const durationString = z.string().superRefine((v, ctx) => {
  const problem = durationProblem(v);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `${problem}; expected ${DURATION_FORMS}` });
});
const watchSchema = z
  .object({
    /** containerd's gRPC socket. */
    address: z.string().min(1).optional(),
    /** containerd's state dir (task bundles live under it). */
    state: z.string().min(1).optional(),
    /** HOST:PORT for /metrics, /healthz and /findings. */
    listen: z.string().min(1).optional(),
    namespaces: z.array(z.string().min(1)).optional(),
    socketDir: z.string().min(1).optional(),
    createdThreshold: durationString.optional(),
    exitGrace: durationString.optional(),
    leakCheckDelay: durationString.optional(),
    leakCheckTimeout: durationString.optional(),
    reconcileInterval: durationString.optional(),
    checkInterval: durationString.optional(),
    queueSize: positiveInt.max(10_000_000).optional(),
  })
  .strict();

/** Region names: one pattern (src/core/names.ts) for the config, `ls` and `copy` references. */
const regionName = z.string().regex(REGION_NAME_RE, `region names are ${REGION_NAME_RULE}`);

/** Placement across regions (src/placement): rules, on-demand promotion, the replicator. */
const placementSchema = z
  .object({
    /**
     * Replication-on-demand: promote a remotely-read blob into the home region after `reads` remote reads within
     * `windowSeconds` (default 3600). Default `reads`: derived from `prices` (src/placement/cost.ts promotionThreshold;
     * 2 at AWS list prices).
     */
    promote: z
      .object({
        policy: z.enum(['demand', 'always', 'never']).optional(),
        reads: positiveInt.optional(),
        windowSeconds: positiveInt.optional(),
        /**
         * Promoted copies not read for this long are evicted (src/placement/evict.ts): `never`, or `12h`, `7d`…
         * Default: the price table's break-even residency (transfer ÷ storage price; ≈ 26 days at AWS list prices).
         */
        evictAfterIdle: z.string().superRefine((v, ctx) => {
          const problem = v.trim() === 'never' ? undefined : durationProblem(v);
          if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `${problem}; expected "never" or ${DURATION_FORMS}` });
        }).optional(),
      })
      .strict()
      .optional(),
    /** Eviction passes in `serve` (and the limits of `transship placement evict`). */
    evict: z
      .object({
        /** Between passes in `serve` (default 3600). */
        intervalSeconds: positiveInt.optional(),
        /**
         * Between a delete and the check that confirms it; ≥ 180, default 22200 (6 h 10 min: longer than the `copy`
         * presence cache's default TTL, which must stay below it), see src/placement/evict.ts.
         */
        graceSeconds: z.number().int().min(180, 'must be at least 180 s: the registry may act on a "present" answer for 30 s, plus a manifest write retried for up to 120 s').optional(),
        /** Digests acted on per pass (default 1000). */
        maxPerPass: positiveInt.optional(),
      })
      .strict()
      .optional(),
    rules: z
      .array(
        z
          .object({
            /** Repository globs: `*` matches within a path component, `**` across components. */
            repos: z.array(z.string().min(1)).min(1),
            /** dr: copy every push eagerly; demand: promote after measured remote reads; never: stay where pushed. */
            reason: z.enum(['dr', 'demand', 'never']),
            /** Target regions (dr); empty/omitted = every other region. */
            regions: z.array(regionName).optional(),
          })
          .strict(),
      )
      .optional(),
    replicator: z
      .object({
        concurrency: positiveInt.max(64).optional(),
        /** Cap on cross-region copy bandwidth, bytes per second (0 or omitted = unlimited). */
        bandwidthBytesPerSecond: z.number().int().nonnegative().optional(),
        intervalSeconds: positiveInt.optional(),
      })
      .strict()
      .optional(),
    /** Order in which other regions are tried for lazy fetches (default: config order). */
    fetchOrder: z.array(regionName).optional(),
  })
  .strict();

/**
 * `mirror:` — pull-through mirroring of upstream registries (src/mirror). Each upstream is selected by containerd's
 * `?ns=<registry>` query parameter or by a path prefix (`/v2/<prefix>/<repo>/…`), and its content is stored under
 * `<prefix>/<repo>` in the same store as pushed images.
 */
const mirrorCredentialsSchema = z
  .object({
    username: z.string().min(1),
    /** Exactly one of password, passwordFile (read at start) or passwordEnv (the variable's name). */
    password: z.string().min(1).optional(),
    passwordFile: z.string().min(1).optional(),
    passwordEnv: z.string().min(1).optional(),
  })
  .strict()
  .refine((c) => [c.password, c.passwordFile, c.passwordEnv].filter((v) => v !== undefined).length === 1, { message: 'give exactly one of password, passwordFile, passwordEnv' });

const mirrorUpstreamSchema = z
  .object({
    /** The registry's name as clients know it: what `ns=` carries (`docker.io`, `ghcr.io`, `registry.example:5000`). */
    registry: z.string().min(1).regex(/^[A-Za-z0-9.-]+(:\d+)?$/, 'a registry host name, optionally with :port'),
    /** Where to fetch from (default https://<registry>; for docker.io, https://registry-1.docker.io). */
    url: z.string().url().optional(),
    /** First path component(s) mirrored content is stored under (default: the registry name, `:` → `-`). */
    prefix: z.string().min(1).optional(),
    /** Glob patterns of upstream repository names served (`library/*`, `*` = any depth); default every repository. */
    repositories: z.array(z.string().min(1)).min(1).optional(),
    /** How long a fetched tag is served before it is revalidated with a HEAD (default 5m; 0 = every request). */
    tagTtl: durationString.optional(),
    /** Accept pushes into the mirrored namespace (stored here, never sent upstream). Default false: 403 DENIED. */
    allowPush: z.boolean().optional(),
    /** Basic credentials (sent to a Basic registry, or to the token service of a Bearer one). Absent = anonymous. */
    credentials: mirrorCredentialsSchema.optional(),
  })
  .strict();

const mirrorSchema = z.object({ upstreams: z.array(mirrorUpstreamSchema).min(1) }).strict();

/** Prices for `transship cost` (USD); defaults are AWS S3 Standard list prices. */
const pricesSchema = z
  .object({
    putPer1000: z.number().nonnegative().optional(),
    getPer1000: z.number().nonnegative().optional(),
    storageGbMonth: z.number().nonnegative().optional(),
    crossRegionPerGb: z.number().nonnegative().optional(),
  })
  .strict();

/** Durations in the retention vocabulary: `never`, or a number with a unit (`12h`, `7d`; ms, s, m, h, d). */
const retentionDuration = z.string().regex(/^(?:never|\d+(?:\.\d+)?(?:ms|s|m|h|d))$/, 'expected "never" or a duration like 12h, 7d or 90d (units ms, s, m, h, d)');

/**
 * Storage lifecycle (docs/gc.md): garbage collection timing, retention rules, leftovers. The safety rule between the
 * timings is checked in the superRefine below; src/gc/config.ts holds the defaults and turns this into milliseconds.
 */
const gcSchema = z
  .object({
    /** Unreferenced blobs are deleted only once their freshness is older than this (default 172800 = 48 h). */
    graceSeconds: positiveInt.optional(),
    /** Writers touch a blob they rely on when its freshness is older than this (default 86400). */
    refreshAfterSeconds: positiveInt.optional(),
    /** Longest time a writer acts on one "present" observation before its manifest is visible (default 3600). */
    horizonSeconds: positiveInt.optional(),
    /** A pass does not delete more than this long after its mark started (default 3600). */
    maxPassSeconds: positiveInt.optional(),
    /** Largest clock difference between machines and the store (default 300). */
    clockSkewSeconds: z.number().int().min(0).optional(),
    /** A writer waits this long after a touch before confirming the blob (default 15); GC's delete budget is a third. */
    settleSeconds: z.number().min(0.3).max(300).optional(),
    /** `serve`: seconds between passes (default 86400; 0 = no passes in serve). */
    intervalSeconds: z.number().int().min(0).optional(),
    /** `serve`: passes start only inside this daily window, UTC `HH:MM-HH:MM` (may wrap midnight). */
    window: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$/, 'expected a UTC window like 01:00-05:00').optional(),
    /** How long a pass's lease lasts before another instance may take over (default 600; renewed while running). */
    leaseSeconds: positiveInt.min(10).optional(),
    leftovers: z
      .object({
        /** Abort multipart uploads started longer ago than this (default 86400; must outlast any upload session). */
        multipartAfterSeconds: positiveInt.optional(),
        /** Remove abandoned upload spools and directory-store temp files older than this (default 86400). */
        tempAfterSeconds: positiveInt.optional(),
      })
      .strict()
      .optional(),
    /** Retention rules: the first rule whose `repos` glob matches a repository applies to it. */
    retention: z
      .array(
        z
          .object({
            /** Repository globs: `*` matches within a path component, `**` across components. */
            repos: z.array(z.string().min(1)).min(1),
            /** Keep the N most recently pushed tags. */
            keepLast: z.number().int().min(0).optional(),
            /** Keep tags matching any of these regular expressions (whole tag). */
            keepTags: z.array(z.string().min(1)).optional(),
            /** Remove tags pushed longer ago than this (unless another keep rule protects them). */
            removeOlderThan: retentionDuration.optional(),
            /** Untagged manifests (not a kept index's child, not a kept subject's referrer) expire after this. */
            untaggedExpireAfter: retentionDuration.optional(),
            /**
             * Remove tags whose manifest was neither pulled (a GET through `serve`, recorded as a pull marker) nor
             * pushed or fetched by a mirror (the tag's write time) within this long (unless another keep rule protects
             * them). zot's pulledWithin; Harbor's proxy-cache expiry.
             */
            pulledWithin: retentionDuration.optional(),
          })
          .strict()
          .superRefine((r, ctx) => {
            for (const [i, p] of (r.keepTags ?? []).entries()) {
              try {
                new RegExp(`^(?:${p})$`);
              } catch (err) {
                ctx.addIssue({ code: 'custom', path: ['keepTags', i], message: `not a valid regular expression: ${(err as Error).message}` });
              }
            }
          }),
      )
      .optional(),
  })
  .strict();

const configSchemaBase = z
  .object({
    /** The home store: where writes go. `dir:PATH` or `s3://BUCKET[/PREFIX]`. */
    store: z.string().min(1).optional(),
    /** The home region's name (a key of `regions`, or a label for the single store). */
    region: regionName.optional(),
    regions: z.record(regionName, regionSchema).optional(),
    s3: s3Schema.optional(),
    concurrency: positiveInt.max(64).optional(),
    cache: z.object({ file: z.string().optional(), ttlSeconds: positiveInt.optional(), enabled: z.boolean().optional() }).strict().optional(),
    retry: z
      .object({ maxAttempts: positiveInt.max(20).optional(), baseDelayMs: z.number().int().nonnegative().optional(), maxDelayMs: positiveInt.optional(), maxElapsedMs: positiveInt.optional() })
      .strict()
      .optional(),
    log: z.object({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).optional() }).strict().optional(),
    otlpEndpoint: z.string().url().optional(),
    serve: serveSchema.optional(),
    placement: placementSchema.optional(),
    prices: pricesSchema.optional(),
    watch: watchSchema.optional(),
    gc: gcSchema.optional(),
    mirror: mirrorSchema.optional(),
  })
  .strict();

export const configSchema = configSchemaBase.superRefine((c, ctx) => {
    checkGcTimings(c, ctx);
    if (c.regions && c.region && !(c.region in c.regions)) {
      ctx.addIssue({ code: 'custom', path: ['region'], message: `home region "${c.region}" is not one of regions: ${Object.keys(c.regions).join(', ')}` });
    }
    if (c.regions && !c.region) ctx.addIssue({ code: 'custom', path: ['region'], message: 'regions are configured but the home region is not: set `region:` (or TRANSSHIP_REGION)' });
    const known = new Set(Object.keys(c.regions ?? {}));
    const check = (names: string[] | undefined, path: (string | number)[]) => {
      for (const [i, n] of (names ?? []).entries()) {
        if (!known.has(n)) ctx.addIssue({ code: 'custom', path: [...path, i], message: `unknown region "${n}"; configured regions: ${[...known].join(', ') || '(none)'}` });
      }
    };
    for (const [i, r] of (c.placement?.rules ?? []).entries()) check(r.regions, ['placement', 'rules', i, 'regions']);
    check(c.placement?.fetchOrder, ['placement', 'fetchOrder']);
  });

/**
 * Storage lifecycle defaults (seconds), docs/gc.md. The grace covers a week-end's worth of nothing and every term of
 * the safety rule checked below with a factor of ~1.8.
 */
export const GC_DEFAULTS = {
  graceSeconds: 172_800,
  refreshAfterSeconds: 86_400,
  horizonSeconds: 3600,
  maxPassSeconds: 3600,
  clockSkewSeconds: 300,
  settleSeconds: 15,
  intervalSeconds: 86_400,
  leaseSeconds: 600,
  multipartAfterSeconds: 86_400,
  tempAfterSeconds: 86_400,
} as const;
/** The registry's "present" answers live this long (src/registry/context.ts presenceTtlMs default). */
const REGISTRY_PRESENCE_TTL_SECONDS = 30;
/** `copy`'s on-disk presence cache default (src/index/presence-cache.ts). */
const COPY_CACHE_TTL_SECONDS = 6 * 3600;

/**
 * The one safety rule of docs/gc.md: a blob may be deleted only when no writer can still act on a look at it, so the
 * grace must outlast the refresh age, the writers' horizon, a pass, the touch settle time and twice the clock skew —
 * and every "present" hint's life (the project's invariant). Reported at `gc.graceSeconds` with every term named.
 */
function checkGcTimings(c: z.infer<typeof configSchemaBase>, ctx: z.RefinementCtx): void {
  const g = c.gc;
  const v = <K extends keyof typeof GC_DEFAULTS>(k: K): number => (g?.[k as keyof NonNullable<typeof g>] as number | undefined) ?? GC_DEFAULTS[k];
  const grace = v('graceSeconds');
  const terms = {
    refreshAfterSeconds: v('refreshAfterSeconds'),
    horizonSeconds: v('horizonSeconds'),
    maxPassSeconds: v('maxPassSeconds'),
    '2 × clockSkewSeconds': 2 * v('clockSkewSeconds'),
    settleSeconds: v('settleSeconds'),
  };
  const sum = Object.values(terms).reduce((a, b) => a + b, 0);
  if (!(grace > sum)) {
    ctx.addIssue({
      code: 'custom',
      path: ['gc', 'graceSeconds'],
      message: `must be longer than ${Object.entries(terms).map(([k, n]) => `${k} (${n})`).join(' + ')} = ${sum} s, got ${grace}: a writer could still act on a look at a blob this pass deletes (docs/gc.md)`,
    });
  }
  const hints: Array<[string, number]> = [
    ['cache.ttlSeconds (the copy presence cache)', c.cache?.ttlSeconds ?? COPY_CACHE_TTL_SECONDS],
    ["the registry's presence cache", REGISTRY_PRESENCE_TTL_SECONDS],
    ['horizonSeconds', v('horizonSeconds')],
  ];
  for (const [what, ttl] of hints) {
    if (!(grace > ttl)) ctx.addIssue({ code: 'custom', path: ['gc', 'graceSeconds'], message: `must be longer than ${what} (${ttl} s), got ${grace}: a cached "present" must expire before its blob can be deleted` });
  }
  const multipart = g?.leftovers?.multipartAfterSeconds ?? GC_DEFAULTS.multipartAfterSeconds;
  const session = c.serve?.uploadIdleSeconds ?? 15 * 60;
  if (!(multipart > session)) {
    ctx.addIssue({ code: 'custom', path: ['gc', 'leftovers', 'multipartAfterSeconds'], message: `must be longer than serve.uploadIdleSeconds (${session} s), got ${multipart}: a live upload session's multipart upload would be aborted` });
  }
}

export type Config = z.infer<typeof configSchema>;

export const DEFAULT_STORE = `dir:${join(process.env.XDG_DATA_HOME ?? join(homedir(), '.local', 'share'), 'transship', 'store')}`;
export const DEFAULT_CACHE_FILE = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'transship', 'presence.jsonl');

function deepMerge<T extends Record<string, unknown>>(a: T, b: Record<string, unknown>): T {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    if (v === undefined) continue;
    const prev = out[k];
    out[k] = prev && typeof prev === 'object' && !Array.isArray(prev) && v && typeof v === 'object' && !Array.isArray(v) ? deepMerge(prev as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out as T;
}

function envLayer(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const num = (name: string): number | undefined => {
    const v = env[name];
    if (v === undefined || v === '') return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new TransshipError('TS_CONFIG_INVALID', `environment variable ${name}="${v}" is not a number`);
    return n;
  };
  const s3 = {
    endpoint: env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || undefined,
    region: env.AWS_REGION || env.AWS_DEFAULT_REGION || undefined,
    accessKeyId: env.AWS_ACCESS_KEY_ID || undefined,
    secretAccessKey: env.AWS_SECRET_ACCESS_KEY || undefined,
    sessionToken: env.AWS_SESSION_TOKEN || undefined,
  };
  return {
    store: env.TRANSSHIP_STORE || undefined,
    region: env.TRANSSHIP_REGION || undefined,
    concurrency: num('TRANSSHIP_CONCURRENCY'),
    otlpEndpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT || undefined,
    log: env.TRANSSHIP_LOG_LEVEL ? { level: env.TRANSSHIP_LOG_LEVEL } : undefined,
    s3: Object.values(s3).some((v) => v !== undefined) ? s3 : undefined,
    serve: env.TRANSSHIP_UPLOAD_SECRET ? { sharedUploads: { secret: env.TRANSSHIP_UPLOAD_SECRET } } : undefined,
    watch: env.TRANSSHIP_CONTAINERD_ADDRESS || env.TRANSSHIP_CONTAINERD_STATE || env.TRANSSHIP_WATCH_LISTEN
      ? { address: env.TRANSSHIP_CONTAINERD_ADDRESS || undefined, state: env.TRANSSHIP_CONTAINERD_STATE || undefined, listen: env.TRANSSHIP_WATCH_LISTEN || undefined }
      : undefined,
  };
}

export function formatZodError(error: z.ZodError, source: string): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${source}: ${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`)
    .join('\n');
}

/** The dotted paths of the bad fields (`gc.graceSeconds`): stable, for tests and tools, where messages are prose. */
export function issuePaths(error: z.ZodError): string[] {
  return error.issues.flatMap((i) => {
    const at = i.path.map(String);
    // An unknown key is reported at its parent; name the key itself, that is the field to fix.
    if (i.code === 'unrecognized_keys') return i.keys.map((k) => [...at, k].join('.'));
    return [at.length ? at.join('.') : '(top level)'];
  });
}

/** Loads and validates: file (`--config` or TRANSSHIP_CONFIG) < environment < flags. */
export function loadConfig(opts: { file?: string | undefined; flags?: Record<string, unknown>; env?: NodeJS.ProcessEnv } = {}): Config {
  const env = opts.env ?? process.env;
  const file = opts.file ?? env.TRANSSHIP_CONFIG;
  let fromFile: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new TransshipError('TS_CONFIG_INVALID', `cannot read config file ${file}: ${(err as Error).message}`, { cause: err });
    }
    let parsed: unknown;
    try {
      parsed = parseYaml(text);
    } catch (err) {
      throw new TransshipError('TS_CONFIG_INVALID', `config file ${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`, { cause: err });
    }
    if (parsed !== null && parsed !== undefined && (typeof parsed !== 'object' || Array.isArray(parsed))) {
      throw new TransshipError('TS_CONFIG_INVALID', `config file ${file}: the top level must be a mapping`);
    }
    const fileCheck = configSchema.safeParse(parsed ?? {});
    if (!fileCheck.success) throw new TransshipError('TS_CONFIG_INVALID', formatZodError(fileCheck.error, file), { details: { paths: issuePaths(fileCheck.error) } });
    fromFile = (parsed ?? {}) as Record<string, unknown>;
  }
  const merged = deepMerge(deepMerge(fromFile, envLayer(env)), opts.flags ?? {});
  const r = configSchema.safeParse(merged);
  if (!r.success) throw new TransshipError('TS_CONFIG_INVALID', formatZodError(r.error, file ? `${file} (+ environment and flags)` : 'configuration (environment and flags)'), { details: { paths: issuePaths(r.error) } });
  return r.data;
}
