// `serve`: a GC pass every gc.intervalSeconds (only inside gc.window when one is set), guarded by the store's lease
// so that of many instances on one bucket one runs at a time (lease.ts). At start the gauge
// gc_last_success_timestamp_seconds is set from the store's newest pass report, so every instance reports the
// store's truth and the TransshipGcNotSucceeding alert sees passes any instance ran.
import type { Config } from '../config/config.js';
import { Periodic } from '@transship/core/periodic';
import type { BlobStore } from '../store/contract.js';
import { gcLastSuccessTimestampSeconds } from '../telemetry/metrics.js';
import type { FreshnessOptions } from '../store/freshness.js';
import { lastSuccess, runPass } from './pass.js';
import { gcSettings, inWindow } from './settings.js';

/** The registry's half of the protocol, from the same settings the passes use. */
export function freshnessOptions(config: Config): FreshnessOptions {
  const s = gcSettings(config);
  return { refreshAfterMs: s.refreshAfterMs, settleMs: s.settleMs, skewMs: s.skewMs };
}

/**
 * The registry's pull markers for retention's pulledWithin (registry/pulls.ts): off with serve.recordPulls: false,
 * else one write per repository and manifest per day, or per eighth of the shortest pulledWithin rule.
 */
export function pullRecording(config: Config): { periodMs: number } | false {
  if (config.serve?.recordPulls === false) return false;
  return { periodMs: gcSettings(config).retention.pullStampMs };
}

/** Starts periodic passes; undefined when gc.intervalSeconds is 0. */
export function startGc(config: Config, store: BlobStore, spoolDir: string | undefined): Periodic | undefined {
  const settings = gcSettings(config);
  if (settings.intervalMs <= 0) return undefined;
  void lastSuccess(store, { signal: AbortSignal.timeout(30_000) })
    .then((at) => {
      if (at !== undefined) gcLastSuccessTimestampSeconds.set(at / 1000);
    })
    .catch(() => undefined);
  // Instances started together spread their first attempt over a tenth of the interval (the lease decides anyway).
  const first = Math.min(settings.intervalMs, 60_000 + Math.floor(Math.random() * settings.intervalMs * 0.1));
  return new Periodic(
    'gc pass',
    async (signal) => {
      if (!inWindow(settings.window, Date.now())) return;
      await runPass(store, settings, { signal, spoolDir });
    },
    settings.intervalMs,
    first,
  );
}
