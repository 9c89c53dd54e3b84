// Coalescing: concurrent misses for the same manifest or blob on one instance share one upstream fetch.
//
// The first caller starts the work; everyone arriving while it is in flight joins it (and is counted as a
// coalesced waiter). An entry stays for as long as its `until` says — a manifest until it is stored, a blob until
// its bytes are verified and stored, so a client arriving mid-stream reads the spool instead of fetching again — and
// is removed then, whether the work succeeded or failed, so a failure is never cached and the next miss retries.
//
// Across instances nothing is shared: each instance fetches at most once per object, and the store's conditional
// write (If-None-Match / link(2)) makes the second writer's PUT a no-op (s3_put_skipped_due_to_dedup).
export interface Joined<T> {
  value: Promise<T>;
  /** True when this caller joined a fetch another caller started. */
  joined: boolean;
}

export class InFlight<T> {
  private readonly entries = new Map<string, Promise<T>>();

  get size(): number {
    return this.entries.size;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /**
   * Joins the work running under `key`, or starts it with `start`. The entry is removed once `until(value)` (default:
   * at once) settles, or when `start` fails.
   */
  run(key: string, start: () => Promise<T>, until: (value: T) => Promise<unknown> = () => Promise.resolve()): Joined<T> {
    const running = this.entries.get(key);
    if (running) return { value: running, joined: true };
    const value = start();
    this.entries.set(key, value);
    const remove = (): void => {
      if (this.entries.get(key) === value) this.entries.delete(key);
    };
    void value.then(
      (v) => until(v).then(remove, remove),
      remove,
    );
    return { value, joined: false };
  }
}
