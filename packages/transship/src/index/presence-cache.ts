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

  markPresent(store: string, digests: Iterable<string>): void {
    const exp = this.now() + this.ttlMs;
    const lines: string[] = [];
    for (const d of digests) {
      this.entries.set(PresenceCache.key(store, d), exp);
      lines.push(JSON.stringify({ s: store, d, e: exp }));
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
    const now = this.now();
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const { s, d, e } = JSON.parse(line) as { s: string; d: string; e: number };
        if (e > now) this.entries.set(PresenceCache.key(s, d), e);
        else this.entries.delete(PresenceCache.key(s, d));
      } catch {
        // torn or foreign line: skip
      }
    }
    // Compact: rewrite only live entries, atomically.
    try {
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, [...this.entries].map(([k, e]) => {
        const [s, d] = k.split('\n');
        return JSON.stringify({ s, d, e });
      }).join('\n') + (this.entries.size ? '\n' : ''));
      renameSync(tmp, file);
    } catch {
      // read-only cache dir: keep going in memory
    }
  }
}
