// Metrics of the one observed retry (telemetry/observed-retry.ts), shared by every part of the project that makes
// remote calls (S3, registries, containerd, OTLP). The names are the seed's spec (DESIGN.md): keep them exactly.
import { Counter, Histogram } from 'prom-client';
import { metricsRegistry } from './metrics-registry.js';

export const retryRegistry = metricsRegistry();
const reg = { registers: [retryRegistry] };

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

