// Which digests (or other content-addressed keys) are known present in which store: a hint that saves presence
// checks, never proof. The one presence-hint implementation: `transship copy` keeps it on disk across runs, the
// registry keeps blob sizes and repository links in memory. Entries expire, and a 404 from the store invalidates
// an entry at once. S3 stays the truth.
//
// For garbage collection (and placement's eviction, src/placement/evict.ts): a writer may act on a hint for as long
// as it lives, so a GC grace period must be longer than the longest hint — `maxPresenceHintMs(config)` below, which
// reads the same configuration the hint lifetimes come from. Keep new hint lifetimes in that function.
//
// A hint may also carry the newest known freshness of its blob (its write or GC touch time, docs/gc.md): a writer
// that relies on a cached blob can skip asking the store whether it needs a touch. Only ever a lower bound.
//
// Persistence is an append-only JSON-lines file (one `{s, d, e[, z][, m]}` per line), compacted when loaded. That keeps
// the CLI's cache across runs without a native dependency; one process owns the file at a time in practice, and a
// torn last line from a crash is skipped.
import { appendFileSync, mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Config } from '../config/config.js';
import { ExpiringMap } from '@transship/core/expiring-map';
import { indexLookupsTotal } from '../telemetry/metrics.js';

/** `transship copy`'s on-disk hints, unless `cache.ttlSeconds` says otherwise. */
export const COPY_HINT_TTL_MS = 6 * 3600_000;
/** The registry's in-memory "blob present" and "repository may read this blob" hints (src/registry). */
export const REGISTRY_HINT_TTL_MS = 30_000;

/** The longest any presence hint lives under `config`: a GC grace period must be longer than this. */
export function maxPresenceHintMs(config: Pick<Config, 'cache'>): number {
  const copy = config.cache?.enabled === false ? 0 : (config.cache?.ttlSeconds ?? COPY_HINT_TTL_MS / 1000) * 1000;
  return Math.max(copy, REGISTRY_HINT_TTL_MS);
}

export interface PresenceCacheOptions {
  ttlMs?: number | undefined;
  /** File to persist to; omitted = memory only. */
  file?: string | undefined;
  /** Bound for long-running processes (the oldest hint goes first); default unbounded. */
  maxEntries?: number | undefined;
  now?: () => number;
}

/** What a hint remembers besides "present": the size when the writer knew it, and the blob's freshness (ms). */
export interface Hint {
  size?: number | undefined;
  fresh?: number | undefined;
}

export interface MarkOptions {
  size?: number | undefined;
  /** Per digest: the blob's write or touch time (ms) when known (kept as the newest seen). */
  freshness?: ReadonlyMap<string, number | undefined> | undefined;
}

export class PresenceCache {
  private readonly entries: ExpiringMap<Hint>;
  readonly ttlMs: number;
  private readonly file: string | undefined;

  constructor(opts: PresenceCacheOptions = {}) {
    this.ttlMs = opts.ttlMs ?? COPY_HINT_TTL_MS;
    this.file = opts.file;
    this.entries = new ExpiringMap({ ttlMs: this.ttlMs, maxEntries: opts.maxEntries, now: opts.now });
    if (this.file) this.load(this.file);
  }

  private static key(store: string, digest: string): string {
    return `${store}\n${digest}`;
  }

  /** The hint for `digest` in `store`, if it has not expired. */
  get(store: string, digest: string): Hint | undefined {
    const hit = this.entries.get(PresenceCache.key(store, digest));
    if (hit) indexLookupsTotal.inc({ result: 'cache_hit' });
    return hit;
  }

  /** The subset of `digests` known present in `store` and not expired. */
  known(store: string, digests: readonly string[]): Set<string> {
    const out = new Set<string>();
    for (const d of digests) if (this.get(store, d)) out.add(d);
    return out;
  }

  /** The newest known freshness of a cached blob (ms), or undefined. */
  freshnessOf(store: string, digest: string): number | undefined {
    return this.entries.get(PresenceCache.key(store, digest))?.fresh;
  }

  markPresent(store: string, digests: Iterable<string>, opts: MarkOptions = {}): void {
    const lines: string[] = [];
    for (const d of digests) {
      const k = PresenceCache.key(store, d);
      const fresh = Math.max(opts.freshness?.get(d) ?? 0, this.entries.get(k)?.fresh ?? 0) || undefined;
      const hint: Hint = { ...(opts.size === undefined ? {} : { size: opts.size }), ...(fresh === undefined ? {} : { fresh }) };
      const e = this.entries.set(k, hint);
      if (e !== undefined) lines.push(JSON.stringify({ s: store, d, e, ...(opts.size === undefined ? {} : { z: opts.size }), ...(fresh === undefined ? {} : { m: fresh }) }));
    }
    if (this.file && lines.length) this.append(lines.join('\n') + '\n');
  }

  invalidate(store: string, digest: string): void {
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
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const { s, d, e, z, m } = JSON.parse(line) as { s: string; d: string; e: number; z?: number; m?: number };
        const k = PresenceCache.key(s, d);
        const fresh = typeof m === 'number' ? Math.max(m, this.entries.get(k)?.fresh ?? 0) : undefined;
        // An expiry in the past (or 0, an invalidation) removes the entry; set() does that.
        this.entries.set(k, { ...(typeof z === 'number' ? { size: z } : {}), ...(fresh === undefined ? {} : { fresh }) }, e);
      } catch {
        // torn or foreign line: skip
      }
    }
    // Compact: rewrite only live entries, atomically.
    try {
      const tmp = `${file}.${process.pid}.tmp`;
      const lines = [...this.entries.live()].map(([k, h, e]) => {
        const [s, d] = k.split('\n');
        return JSON.stringify({ s, d, e, ...(h.size === undefined ? {} : { z: h.size }), ...(h.fresh === undefined ? {} : { m: h.fresh }) });
      });
      writeFileSync(tmp, lines.join('\n') + (lines.length ? '\n' : ''));
      renameSync(tmp, file);
    } catch {
      // read-only cache dir: keep going in memory
    }
  }
}
