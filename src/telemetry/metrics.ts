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
