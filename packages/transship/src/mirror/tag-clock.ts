// When a mirrored tag was last fetched or revalidated, to decide whether it is still fresh (its upstream's TTL).
//
// The durable record is the tag object itself: its last modification is the time it was fetched, and a
// revalidation that finds the digest unchanged writes the tag again (one small PUT per TTL) to move that time. So
// every instance, and an instance after a restart, knows how old a stored tag is without asking the upstream; this
// instance remembers the answer in memory so a busy tag costs no store request per pull either.
import { ExpiringMap } from '@transship/core/expiring-map';
import type { BlobStore } from '../store/contract.js';
import { tagKey } from '../store/keys.js';
import type { Signalled } from '@transship/core/signal';

export class TagClock {
  private readonly fetched: ExpiringMap<number>;

  constructor(private readonly now: () => number = Date.now) {
    // Entries only need to outlive the longest TTL by a little; a forgotten one costs one stat of the tag object.
    this.fetched = new ExpiringMap<number>({ ttlMs: 24 * 3600_000, maxEntries: 100_000, now });
  }

  /** When `name:tag` was fetched or last found unchanged upstream, or undefined when unknown. */
  async fetchedAt(store: BlobStore, name: string, tag: string, opts: Signalled = {}): Promise<number | undefined> {
    const key = `${name}:${tag}`;
    const known = this.fetched.get(key);
    if (known !== undefined) return known;
    const info = await store.objects.stat(tagKey(name, tag), opts).catch(() => undefined);
    if (info) this.fetched.set(key, info.lastModified);
    return info?.lastModified;
  }

  async isFresh(store: BlobStore, name: string, tag: string, ttlMs: number, opts: Signalled = {}): Promise<boolean> {
    if (ttlMs <= 0) return false;
    const at = await this.fetchedAt(store, name, tag, opts);
    return at !== undefined && this.now() - at < ttlMs;
  }

  /** The tag was just written or found unchanged upstream. */
  touch(name: string, tag: string): void {
    this.fetched.set(`${name}:${tag}`, this.now());
  }
}
