// Every metric the project exports, defined in this one file on one prom-client registry. The names marked "seed"
// are the spec from DESIGN.md and must not change: dashboards and alerts depend on them.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export const registry = new Registry();

const reg = { registers: [registry] };

// --- transfer core (seed names) ---
export const s3PutSkippedDueToDedup = new Counter({
  name: 's3_put_skipped_due_to_dedup',
  help: 'Blob writes skipped because the blob was already present (reason: cache, exists, conditional_412, mount).',
  labelNames: ['reason'] as const,
  ...reg,
});
export const uploadRetryTotal = new Counter({
  name: 'upload_retry_total',
  help: 'Remote operations that needed more than one attempt, by final status and the last failure reason.',
  labelNames: ['status', 'reason'] as const,
  ...reg,
});
export const uploadRetryLatencySeconds = new Histogram({
  name: 'upload_retry_latency_seconds',
  help: 'Time from the first attempt to the final outcome of retried operations.',
  buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
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
export const containerdDoctorFindings = new Gauge({
  name: 'containerd_doctor_findings',
  help: 'Findings of the last containerd doctor run, by finding code and severity.',
  labelNames: ['code', 'severity'] as const,
  ...reg,
});
export const containerdDoctorUp = new Gauge({
  name: 'containerd_doctor_up',
  help: '1 when the last doctor run could reach containerd and see what it needed, 0 otherwise.',
  ...reg,
});
export const containerdDoctorLastRunTimestampSeconds = new Gauge({
  name: 'containerd_doctor_last_run_timestamp_seconds',
  help: 'Unix time at which the last doctor run finished.',
  ...reg,
});
export const containerdDoctorDurationSeconds = new Gauge({
  name: 'containerd_doctor_duration_seconds',
  help: 'Wall time of the last doctor diagnosis.',
  ...reg,
});
export const containerdDoctorRepairActionsTotal = new Counter({
  name: 'containerd_doctor_repair_actions_total',
  help: 'Repair actions by kind and outcome (done, skipped_precondition, failed).',
  labelNames: ['action', 'outcome'] as const,
  ...reg,
});
export const containerdRpcTotal = new Counter({
  name: 'containerd_rpc_total',
  help: 'containerd gRPC calls by method and gRPC status name.',
  labelNames: ['method', 'status'] as const,
  ...reg,
});

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
export const containerdWatchEventsTotal = new Counter({
  name: 'containerd_watch_events_total',
  help: "containerd events received from the event stream, by topic (before the bounded queue).",
  labelNames: ['topic'] as const,
  ...reg,
});
export const containerdWatchEventsDroppedTotal = new Counter({
  name: 'containerd_watch_events_dropped_total',
  help: 'Events dropped because the bounded queue between intake and export was full (a reconcile then repairs the state).',
  labelNames: ['reason'] as const,
  ...reg,
});
export const containerdWatchQueueDepth = new Gauge({
  name: 'containerd_watch_queue_depth',
  help: 'Events waiting in the bounded queue between the event stream and the lifecycle processor.',
  ...reg,
});
export const containerdWatchSpansDroppedTotal = new Counter({
  name: 'containerd_watch_spans_dropped_total',
  help: 'Lifecycle spans dropped because the span export queue was full (exporter slower than the event rate).',
  ...reg,
});
export const containerdWatchPhaseDurationSeconds = new Histogram({
  name: 'containerd_watch_phase_duration_seconds',
  help: 'Duration of container lifecycle phases (prepare, task_create, created, running, exited, container_delete, lifetime), from containerd event timestamps.',
  labelNames: ['phase'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400],
  ...reg,
});
export const containerdWatchOomKillsTotal = new Counter({
  name: 'containerd_watch_oom_kills_total',
  help: 'OOM kills reported by containerd (/tasks/oom), by namespace.',
  labelNames: ['namespace'] as const,
  ...reg,
});
export const containerdWatchTaskExitsTotal = new Counter({
  name: 'containerd_watch_task_exits_total',
  help: 'Init process exits by namespace and outcome (zero, nonzero, oom, shim_died).',
  labelNames: ['namespace', 'outcome'] as const,
  ...reg,
});
export const containerdWatchUnexpectedShimExitsTotal = new Counter({
  name: 'containerd_watch_unexpected_shim_exits_total',
  help: 'Shim processes that went away while their task still existed (killed, crashed, OOM-killed), by namespace.',
  labelNames: ['namespace'] as const,
  ...reg,
});
export const containerdWatchLeaksTotal = new Counter({
  name: 'containerd_watch_leaks_total',
  help: 'Resources not released after a task delete, by kind (the doctor finding code: stale-socket, leaked-bundle, …).',
  labelNames: ['kind'] as const,
  ...reg,
});
export const containerdWatchLeakChecksTotal = new Counter({
  name: 'containerd_watch_leak_checks_total',
  help: 'Post-delete leak checks finished, by result (clean, leaked).',
  labelNames: ['result'] as const,
  ...reg,
});
export const containerdWatchTasksStuckCreated = new Gauge({
  name: 'containerd_watch_tasks_stuck_created',
  help: 'Tasks CREATED (never started) for longer than the threshold at the last check, by namespace.',
  labelNames: ['namespace'] as const,
  ...reg,
});
export const containerdWatchExitEventsMissingTotal = new Counter({
  name: 'containerd_watch_exit_events_missing_total',
  help: 'Task init processes that were gone for longer than the grace period without a /tasks/exit event, by namespace.',
  labelNames: ['namespace'] as const,
  ...reg,
});
export const containerdWatchReconciledTotal = new Counter({
  name: 'containerd_watch_reconciled_total',
  help: 'Lifecycle transitions the event stream did not deliver and a reconcile with the API supplied, by transition.',
  labelNames: ['transition'] as const,
  ...reg,
});
export const containerdWatchSubscriptionUp = new Gauge({
  name: 'containerd_watch_subscription_up',
  help: "1 while subscribed to containerd's event stream, 0 while reconnecting.",
  ...reg,
});
export const containerdWatchResubscriptionsTotal = new Counter({
  name: 'containerd_watch_resubscriptions_total',
  help: 'Times the event stream was lost and subscribed again.',
  ...reg,
});
export const containerdWatchContainersTracked = new Gauge({
  name: 'containerd_watch_containers_tracked',
  help: 'Containers whose lifecycle the watcher currently follows.',
  ...reg,
});
export const containerdWatchLastEventTimestampSeconds = new Gauge({
  name: 'containerd_watch_last_event_timestamp_seconds',
  help: 'Unix time of the last event received from containerd.',
  ...reg,
});
export const containerdWatchReconcilesTotal = new Counter({
  name: 'containerd_watch_reconciles_total',
  help: 'Reconciles with the containerd API (after each subscribe, periodically, after drops), by outcome.',
  labelNames: ['outcome'] as const,
  ...reg,
});

// --- storage lifecycle (docs/gc.md) ---
export const gcRunsTotal = new Counter({
  name: 'gc_runs_total',
  help: 'Garbage collection passes, by result (success, failure, busy = another instance held the lease, dry_run).',
  labelNames: ['result'] as const,
  ...reg,
});
export const gcDeletedObjectsTotal = new Counter({
  name: 'gc_deleted_objects_total',
  help: 'Objects garbage collection removed, by kind (blob, layer_link, referrer_link, manifest_link, tag, touch, multipart, spool, temp).',
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
