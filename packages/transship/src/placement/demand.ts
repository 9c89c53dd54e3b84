// Measured demand: remote reads per digest within a sliding window. Per instance and in memory: promotion is an
// optimisation, so losing the counts on restart only delays it. Bounded: at most `maxKeys` digests are tracked
// (oldest-touched evicted) and at most `reads` timestamps per digest are kept.
export class DemandTracker {
  private readonly hits = new Map<string, number[]>();

  constructor(
    private readonly windowMs: number,
    private readonly keep: number,
    private readonly maxKeys = 100_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records one remote read and returns how many fell within the window (this one included). */
  record(digest: string): number {
    const t = this.now();
    const list = (this.hits.get(digest) ?? []).filter((x) => t - x < this.windowMs);
    list.push(t);
    while (list.length > Math.max(1, this.keep)) list.shift();
    this.hits.delete(digest);
    this.hits.set(digest, list);
    if (this.hits.size > this.maxKeys) {
      const oldest = this.hits.keys().next().value;
      if (oldest !== undefined) this.hits.delete(oldest);
    }
    return list.length;
  }

  forget(digest: string): void {
    this.hits.delete(digest);
  }
}
