// Which digests are known present in which store: a hint that saves presence checks, never proof. Entries expire
// (the TTL must stay shorter than any future GC grace period, see docs/architecture.md), and a 404 from the store
// invalidates an entry at once. S3 stays the truth.
//
// Persistence is an append-only JSON-lines file (one `{s, d, e}` per line), compacted when loaded. That keeps the
// CLI's cache across runs without a native dependency; one process owns the file at a time in practice, and a torn
// last line from a crash is skipped.
import { appendFileSync, mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { dirname } from 'node:path';
import { indexLookupsTotal } from '../telemetry/metrics.js';

export interface PresenceCacheOptions {
  ttlMs?: number;
  /** File to persist to; omitted = memory only. */
  file?: string | undefined;
  now?: () => number;
}

export class PresenceCache {
  private readonly entries = new Map<string, number>();
  /**
   * The newest known freshness of an entry's blob (its write or GC touch time, ms; docs/gc.md): lets a writer that
   * relies on a cached blob skip asking the store whether it needs a touch. Only ever a lower bound, so never unsafe.
   */
  private readonly fresh = new Map<string, number>();
  readonly ttlMs: number;
  private readonly file: string | undefined;
  private readonly now: () => number;

  constructor(opts: PresenceCacheOptions = {}) {
    this.ttlMs = opts.ttlMs ?? 6 * 3600_000;
    this.file = opts.file;
    this.now = opts.now ?? Date.now;
    if (this.file) this.load(this.file);
  }

  private static key(store: string, digest: string): string {
    return `${store}\n${digest}`;
  }

  /** The subset of `digests` known present in `store` and not expired. */
  known(store: string, digests: readonly string[]): Set<string> {
    const now = this.now();
    const out = new Set<string>();
    for (const d of digests) {
      const exp = this.entries.get(PresenceCache.key(store, d));
      if (exp !== undefined && exp > now) {
        out.add(d);
        indexLookupsTotal.inc({ result: 'cache_hit' });
      }
    }
    return out;
  }

  /** The newest known freshness of a cached blob (ms), or undefined. */
  freshnessOf(store: string, digest: string): number | undefined {
    return this.fresh.get(PresenceCache.key(store, digest));
  }

  markPresent(store: string, digests: Iterable<string>, freshness?: ReadonlyMap<string, number | undefined>): void {
    const exp = this.now() + this.ttlMs;
    const lines: string[] = [];
    for (const d of digests) {
      const k = PresenceCache.key(store, d);
      this.entries.set(k, exp);
      const m = Math.max(freshness?.get(d) ?? 0, this.fresh.get(k) ?? 0) || undefined;
      if (m !== undefined) this.fresh.set(k, m);
      lines.push(JSON.stringify({ s: store, d, e: exp, ...(m !== undefined ? { m } : {}) }));
    }
    if (this.file && lines.length) this.append(lines.join('\n') + '\n');
  }

  invalidate(store: string, digest: string): void {
    this.fresh.delete(PresenceCache.key(store, digest));
    if (this.entries.delete(PresenceCache.key(store, digest)) && this.file) this.append(JSON.stringify({ s: store, d: digest, e: 0 }) + '\n');
  }

  get size(): number {
    return this.entries.size;
  }

  private append(text: string): void {
    try {
      mkdirSync(dirname(this.file as string), { recursive: true });
      appendFileSync(this.file as string, text);
    } catch {
      // A cache that cannot persist is still a correct (memory-only) cache.
    }
  }

  private load(file: string): void {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return;
    }
    const now = this.now();
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const { s, d, e, m } = JSON.parse(line) as { s: string; d: string; e: number; m?: number };
        const k = PresenceCache.key(s, d);
        if (e > now) {
          this.entries.set(k, e);
          if (typeof m === 'number') this.fresh.set(k, Math.max(m, this.fresh.get(k) ?? 0));
        } else {
          this.entries.delete(k);
          this.fresh.delete(k);
        }
      } catch {
        // torn or foreign line: skip
      }
    }
    // Compact: rewrite only live entries, atomically.
    try {
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, [...this.entries].map(([k, e]) => {
        const [s, d] = k.split('\n');
        const m = this.fresh.get(k);
        return JSON.stringify({ s, d, e, ...(m !== undefined ? { m } : {}) });
      }).join('\n') + (this.entries.size ? '\n' : ''));
      renameSync(tmp, file);
    } catch {
      // read-only cache dir: keep going in memory
    }
  }
}
