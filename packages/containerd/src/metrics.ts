// Every metric of the containerd lifecycle tools (doctor, watch), on this package's own registry: a process that
// does not load this package (serve, copy) does not export these series, so their alerts only fire where they run.
import { Counter, Gauge, Histogram } from 'prom-client';
import { metricsRegistry } from '@transship/core/metrics-registry';

export const registry = metricsRegistry();
const reg = { registers: [registry] };

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

