// The gc section of the configuration in milliseconds, defaults filled (the defaults and the safety rule between the
// timings live in src/core/config.ts, where the configuration is validated; docs/gc.md explains them).
import { GC_DEFAULTS, type Config } from '../config/config.js';
import { RetentionRules } from './retention.js';

export interface GcSettings {
  graceMs: number;
  refreshAfterMs: number;
  horizonMs: number;
  maxPassMs: number;
  skewMs: number;
  settleMs: number;
  intervalMs: number;
  /** UTC minutes of the day [start, end); undefined = any time. */
  window: { start: number; end: number } | undefined;
  leaseMs: number;
  multipartAfterMs: number;
  tempAfterMs: number;
  retention: RetentionRules;
}

function minutes(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number);
  return (h ?? 0) * 60 + (m ?? 0);
}

export function gcSettings(config: Config): GcSettings {
  const g = config.gc ?? {};
  const s = (v: number | undefined, d: number): number => (v ?? d) * 1000;
  const w = g.window?.split('-');
  return {
    graceMs: s(g.graceSeconds, GC_DEFAULTS.graceSeconds),
    refreshAfterMs: s(g.refreshAfterSeconds, GC_DEFAULTS.refreshAfterSeconds),
    horizonMs: s(g.horizonSeconds, GC_DEFAULTS.horizonSeconds),
    maxPassMs: s(g.maxPassSeconds, GC_DEFAULTS.maxPassSeconds),
    skewMs: s(g.clockSkewSeconds, GC_DEFAULTS.clockSkewSeconds),
    settleMs: s(g.settleSeconds, GC_DEFAULTS.settleSeconds),
    intervalMs: s(g.intervalSeconds, GC_DEFAULTS.intervalSeconds),
    window: w && w.length === 2 ? { start: minutes(w[0] as string), end: minutes(w[1] as string) } : undefined,
    leaseMs: s(g.leaseSeconds, GC_DEFAULTS.leaseSeconds),
    multipartAfterMs: s(g.leftovers?.multipartAfterSeconds, GC_DEFAULTS.multipartAfterSeconds),
    tempAfterMs: s(g.leftovers?.tempAfterSeconds, GC_DEFAULTS.tempAfterSeconds),
    retention: new RetentionRules(g.retention ?? []),
  };
}

/** Whether `at` (ms) falls inside the daily UTC window (a window may wrap midnight). */
export function inWindow(window: GcSettings['window'], at: number): boolean {
  if (!window) return true;
  const d = new Date(at);
  const m = d.getUTCHours() * 60 + d.getUTCMinutes();
  return window.start <= window.end ? m >= window.start && m < window.end : m >= window.start || m < window.end;
}
