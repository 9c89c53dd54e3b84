// The metrics factory: every part of the project defines its metrics on a registry of its own, made here, and a
// process exports exactly the registries of the parts it loaded. A `serve` process never loads the containerd
// package, so it never exports (or alerts on) a containerd series; a `watch` process never exports registry series.
import { Registry, collectDefaultMetrics } from 'prom-client';

const registries: Registry[] = [];

/** A new registry for one part's metrics; it joins what this process exports. */
export function metricsRegistry(): Registry {
  const r = new Registry();
  registries.push(r);
  return r;
}

/** Every metric this process defined: what `/metrics` serves and `--metrics-file` writes. */
export function processMetrics(): Registry {
  return Registry.merge(registries);
}

let processDefaults: Registry | undefined;

/**
 * prom-client's process and Node.js metrics (process_resident_memory_bytes, process_cpu_seconds_total, nodejs_heap_*,
 * nodejs_eventloop_lag_*) join this process's export; once per process, however often it is called. Long-running
 * services call it (their dashboards chart memory); one-shot commands do not, so a `--metrics-file` stays about the
 * transfer.
 */
export function exportProcessDefaults(): void {
  if (processDefaults) return;
  processDefaults = metricsRegistry();
  collectDefaultMetrics({ register: processDefaults });
}
