// A bounded in-memory map whose entries expire: the one TTL mechanism (presence hints in src/index/presence-cache.ts,
// the registry's presigned-URL reuse). Expired entries are dropped when read; past `maxEntries` the oldest
// insertion goes first (a Map keeps insertion order, and set() re-inserts).
export interface ExpiringMapOptions {
  /** Lifetime of an entry set without an explicit expiry (ms); ≤ 0 means nothing is kept. */
  ttlMs: number;
  maxEntries?: number | undefined;
  /** Clock (tests). */
  now?: (() => number) | undefined;
}

export class ExpiringMap<V> {
  private readonly entries = new Map<string, { value: V; expires: number }>();
  readonly ttlMs: number;
  readonly maxEntries: number;
  private readonly now: () => number;

  constructor(opts: ExpiringMapOptions) {
    this.ttlMs = opts.ttlMs;
    this.maxEntries = opts.maxEntries ?? Number.POSITIVE_INFINITY;
    this.now = opts.now ?? Date.now;
  }

  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expires <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.value;
  }

  /** Keeps `value` until `expires` (default: now + ttlMs); returns the expiry, or undefined when nothing is kept. */
  set(key: string, value: V, expires?: number): number | undefined {
    const until = expires ?? this.now() + this.ttlMs;
    if (this.ttlMs <= 0 || !Number.isFinite(until) || until <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    this.entries.delete(key);
    this.entries.set(key, { value, expires: until });
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    return until;
  }

  delete(key: string): boolean {
    return this.entries.delete(key);
  }

  /** Live entries with their expiry (persistence). */
  *live(): IterableIterator<[key: string, value: V, expires: number]> {
    const now = this.now();
    for (const [k, e] of this.entries) if (e.expires > now) yield [k, e.value, e.expires];
  }

  get size(): number {
    return this.entries.size;
  }
}
