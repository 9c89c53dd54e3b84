// The metrics factory: every part of the project defines its metrics on a registry of its own, made here, and a
// process exports exactly the registries of the parts it loaded. A `serve` process never loads the containerd
// package, so it never exports (or alerts on) a containerd series; a `watch` process never exports registry series.
import { Registry } from 'prom-client';

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
