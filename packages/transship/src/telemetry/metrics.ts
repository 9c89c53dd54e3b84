// Every metric of the image transfer service (store, placement, registry, server), defined in this one file on its
// own registry (see metrics-registry.ts: a process exports only the parts it loaded). The names marked "seed" are
// the spec from DESIGN.md and must not change: dashboards and alerts depend on them. The retry metrics (seed names
// too) live in retry-metrics.ts because every part shares the one observed retry.
import { Counter, Gauge, Histogram } from 'prom-client';
import { metricsRegistry } from '@transship/core/metrics-registry';

export const registry = metricsRegistry();

const reg = { registers: [registry] };

// --- transfer core (seed names) ---
export const s3PutSkippedDueToDedup = new Counter({
  name: 's3_put_skipped_due_to_dedup',
  help: 'Blob writes skipped because the blob was already present (reason: cache, exists, conditional_412, mount).',
  labelNames: ['reason'] as const,
  ...reg,
});
// --- placement (seed names; registered now, fed by the placement module) ---
export const blobReadsTotal = new Counter({
  name: 'blob_reads_total',
  help: 'Blob reads by where they were served from.',
  labelNames: ['location'] as const,
  ...reg,
});
export const blobHitRatioLocalVsRemote = new Gauge({
  name: 'blob_hit_ratio_local_vs_remote',
  help: 'Share of blob reads served from the local region (0-1), derived from blob_reads_total.',
  registers: [registry],
  async collect() {
    const snap = await blobReadsTotal.get();
    let local = 0;
    let total = 0;
    for (const v of snap.values) {
      total += v.value;
      if (v.labels.location === 'local') local += v.value;
    }
    this.set(total === 0 ? 0 : local / total);
  },
});
export const crossRegionUploadBytesTotal = new Counter({
  name: 'cross_region_upload_bytes_total',
  help: 'Bytes copied from one region to another.',
  labelNames: ['from', 'to'] as const,
  ...reg,
});
export const promotedBlobEvictionsTotal = new Counter({
  name: 'promoted_blob_evictions_total',
  help: 'Promoted copies handled by eviction passes: evicted (deleted when idle), adopted (a local repository needs it; kept as a normal blob), restored (copied back after a push raced the eviction).',
  labelNames: ['result'] as const,
  ...reg,
});
export const promotedBlobEvictedBytesTotal = new Counter({
  name: 'promoted_blob_evicted_bytes_total',
  help: 'Bytes of promoted copies deleted by eviction passes.',
  ...reg,
});

// --- transfer core (project names) ---
export const s3RequestsTotal = new Counter({
  name: 's3_requests_total',
  help: 'S3 requests sent, by operation and outcome.',
  labelNames: ['store', 'operation', 'outcome'] as const,
  ...reg,
});
export const blobUploadBytesTotal = new Counter({
  name: 'blob_upload_bytes_total',
  help: 'Blob bytes written to a store.',
  labelNames: ['store'] as const,
  ...reg,
});
export const blobSkippedBytesTotal = new Counter({
  name: 'blob_skipped_bytes_total',
  help: 'Blob bytes not written because the store already had them.',
  labelNames: ['store'] as const,
  ...reg,
});
export const indexLookupsTotal = new Counter({
  name: 'index_lookups_total',
  help: 'Presence lookups by result (cache_hit, remote_present, remote_absent).',
  labelNames: ['result'] as const,
  ...reg,
});
export const multipartAbortsTotal = new Counter({
  name: 'multipart_aborts_total',
  help: 'Multipart uploads aborted after a failure or cancellation.',
  labelNames: ['store'] as const,
  ...reg,
});

// --- containerd ---
// --- registry ---
export const registryRequestsTotal = new Counter({
  name: 'registry_requests_total',
  help: 'Registry API requests by method, operation and HTTP status.',
  labelNames: ['method', 'operation', 'status'] as const,
  ...reg,
});
export const registryRequestDurationSeconds = new Histogram({
  name: 'registry_request_duration_seconds',
  help: 'Registry API request duration by method and operation.',
  labelNames: ['method', 'operation'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120],
  ...reg,
});
export const registryUploadSessions = new Gauge({
  name: 'registry_upload_sessions',
  help: 'Open blob upload sessions spooled on this instance.',
  ...reg,
});
export const registryUploadSpoolBytes = new Gauge({
  name: 'registry_upload_spool_bytes',
  help: 'Bytes held in upload spools of open sessions on this instance (bounded by serve.maxSpoolBytes).',
  ...reg,
});
export const registryUploadRefusalsTotal = new Counter({
  name: 'registry_upload_refusals_total',
  help: 'Uploads refused by a resource bound: reason=sessions (serve.maxUploadSessions), spool_bytes (serve.maxSpoolBytes).',
  labelNames: ['reason'] as const,
  ...reg,
});
export const registryUploadContinuedTotal = new Counter({
  name: 'registry_upload_sessions_continued_total',
  help: 'Shared upload sessions (serve.sharedUploads) by event: adopted = continued from another instance\'s state token; commit_reread = a commit of a stage another instance started, checked by reading the blob back; commit_vouched = one the staging instance had hashed whole (its parts checked by ETag, no read-back).',
  labelNames: ['event'] as const,
  ...reg,
});
export const registryConnectionTimeoutsTotal = new Counter({
  name: 'registry_connection_timeouts_total',
  help: 'Connections closed because a client sent (or read) nothing for serve.idleTimeoutSeconds mid-request.',
  ...reg,
});
export const registryUploadBytesTotal = new Counter({
  name: 'registry_upload_bytes_total',
  help: 'Blob bytes received from registry clients (before dedup).',
  ...reg,
});
export const registryServedBytesTotal = new Counter({
  name: 'registry_served_bytes_total',
  help: 'Blob bytes sent to registry clients.',
  ...reg,
});
export const registryBlobRedirectsTotal = new Counter({
  name: 'registry_blob_redirects_total',
  help: 'Blob GETs answered with a redirect to a presigned store URL (serve.redirect), so the bytes bypassed this instance.',
  ...reg,
});

export const registryPullRecordsTotal = new Counter({
  name: 'registry_pull_records_total',
  help: 'Manifest GETs noted for retention\'s pulledWithin (registry/pulls.ts), by result: written = a pull marker was stored (in the background), throttled = one was written by this instance within the stamp period, failed = the write failed (logged; the next pull retries), dropped = too many writes in flight.',
  labelNames: ['result'] as const,
  ...reg,
});

export const registryBlobCacheRequestsTotal = new Counter({
  name: 'registry_blob_cache_requests_total',
  help: 'Blob GETs looked up in the local disk cache (serve.blobCache), by result (hit, miss).',
  labelNames: ['result'] as const,
  ...reg,
});
export const registryBlobCacheBytes = new Gauge({
  name: 'registry_blob_cache_bytes',
  help: 'Bytes of blobs held in the local disk cache (serve.blobCache).',
  ...reg,
});
export const registryBlobCacheFillsTotal = new Counter({
  name: 'registry_blob_cache_fills_total',
  help: 'Blobs added to the local disk cache, by source (upload: a verified upload spool; read: a store read, verified while it was served) and outcome (ok, skipped, failed).',
  labelNames: ['source', 'outcome'] as const,
  ...reg,
});

// --- containerd watch (`transship watch`, src/containerd/watch) ---
// --- storage lifecycle (docs/gc.md) ---
export const gcRunsTotal = new Counter({
  name: 'gc_runs_total',
  help: 'Garbage collection passes, by result (success, failure, busy = another instance held the lease, dry_run).',
  labelNames: ['result'] as const,
  ...reg,
});
export const gcDeletedObjectsTotal = new Counter({
  name: 'gc_deleted_objects_total',
  help: 'Objects garbage collection removed, by kind (blob, layer_link, referrer_link, manifest_link, tag, pulled_marker, touch, multipart, spool, temp).',
  labelNames: ['kind'] as const,
  ...reg,
});
export const gcReclaimedBytesTotal = new Counter({
  name: 'gc_reclaimed_bytes_total',
  help: 'Bytes of blobs garbage collection deleted.',
  ...reg,
});
export const gcDurationSeconds = new Histogram({
  name: 'gc_duration_seconds',
  help: 'Wall time of garbage collection passes (mark, sweep and leftovers).',
  buckets: [1, 5, 15, 60, 300, 900, 1800, 3600, 7200],
  ...reg,
});
export const gcLastSuccessTimestampSeconds = new Gauge({
  name: 'gc_last_success_timestamp_seconds',
  help: 'Unix time at which the last successful garbage collection pass ended.',
  ...reg,
});
// --- pull-through mirror (src/mirror) ---
export const mirrorUpstreamRequestsTotal = new Counter({
  name: 'mirror_upstream_requests_total',
  help: 'Calls to an upstream registry (each through the one observed retry), by upstream, kind (manifest, manifest_head, blob) and result (ok, not_found, unauthorized, throttled, unavailable, digest_mismatch, error).',
  labelNames: ['upstream', 'kind', 'result'] as const,
  ...reg,
});
export const mirrorUpstreamBytesTotal = new Counter({
  name: 'mirror_upstream_bytes_total',
  help: 'Bytes received from an upstream registry (manifests and blobs), by upstream.',
  labelNames: ['upstream'] as const,
  ...reg,
});
export const mirrorRequestsTotal = new Counter({
  name: 'mirror_requests_total',
  help: 'Manifest and blob reads in mirrored repositories, by result: hit (served from the store), miss (fetched from the upstream), stale (a stored tag served because the upstream could not revalidate it).',
  labelNames: ['kind', 'result'] as const,
  ...reg,
});
export const mirrorCoalescedWaitersTotal = new Counter({
  name: 'mirror_coalesced_waiters_total',
  help: 'Mirror misses that joined an upstream fetch already in flight on this instance instead of starting another.',
  labelNames: ['kind'] as const,
  ...reg,
});

// --- containerd watch (`transship watch`, src/containerd/watch) ---
