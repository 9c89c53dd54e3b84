// Manifest bytes by digest, in memory, to save backend requests on hot paths. Content-addressed bytes never change,
// so this is safe forever; it does NOT prove presence (callers still check the manifest link or the tag, which can
// change). "Present" hints with an expiry are src/index/presence-cache.ts's.

export class ContentCache {
  private readonly entries = new Map<string, Buffer>();
  private bytes = 0;
  constructor(private readonly maxBytes = 32 * 1024 * 1024) {}

  get(digest: string): Buffer | undefined {
    const b = this.entries.get(digest);
    if (b) {
      // Map keeps insertion order: re-inserting marks it most recently used.
      this.entries.delete(digest);
      this.entries.set(digest, b);
    }
    return b;
  }

  set(digest: string, bytes: Buffer): void {
    if (bytes.length > this.maxBytes / 4 || this.entries.has(digest)) return;
    this.entries.set(digest, bytes);
    this.bytes += bytes.length;
    for (const [k, v] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(k);
      this.bytes -= v.length;
    }
  }
}
