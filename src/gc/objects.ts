// What garbage collection needs from a store, and nothing more: raw keys with their sizes and modification times,
// listed page by page (the sweep's freshness argument, docs/gc.md, counts from the moment each page was *asked
// for*), small objects read and written with put-if-absent, batch deletes, and the multipart uploads in flight.
// The object drivers (src/store/) implement it; src/gc/ never builds a store key itself except under `_gc/`,
// through src/store/keys.ts.
import type { Signalled } from '../store/contract.js';

export interface ObjectEntry {
  key: string;
  size: number;
  /** The store's clock, ms since the epoch. */
  lastModified: number;
}

export interface ObjectPage {
  /** Local clock, ms: when the request for this page was sent (before any of its entries were looked at). */
  sentAt: number;
  entries: ObjectEntry[];
}

export interface InFlightUpload {
  key: string;
  uploadId: string;
  /** The store's clock, ms. */
  initiated: number;
}

export interface GcObjects {
  /** Display name of the store (for logs and reports). */
  readonly name: string;
  /**
   * Keys under `prefix` in lexicographic order, a page (≤ 1000) at a time, starting after `startAfter` when given.
   * Each page is requested only when the consumer asks for it, so `sentAt` is an upper bound on the age of what it
   * holds.
   */
  pages(prefix: string, opts?: Signalled & { startAfter?: string | undefined }): AsyncIterable<ObjectPage>;
  /** Small object's body and modification time, or undefined when absent. */
  read(key: string, opts?: Signalled): Promise<{ body: Buffer; lastModified: number } | undefined>;
  /** Writes `key` unless it exists: true = written, false = someone else's is there (412). */
  putIfAbsent(key: string, body: string, opts?: Signalled): Promise<boolean>;
  /** Deletes `keys` (≤ 1000, one DeleteObjects on S3); absent keys are not an error. */
  deleteMany(keys: readonly string[], opts?: Signalled): Promise<void>;
  /** Multipart uploads in flight (S3 only). */
  inFlightUploads?(opts?: Signalled): AsyncIterable<InFlightUpload>;
  abortUpload?(upload: InFlightUpload, opts?: Signalled): Promise<void>;
  /** Requests sent so far, by operation. */
  requestCounts(): Record<string, number>;
}

/** All entries under `prefix`, page after page (for the parts where no freshness argument hangs on page times). */
export async function* entries(objects: GcObjects, prefix: string, opts: Signalled = {}): AsyncIterable<ObjectEntry> {
  for await (const page of objects.pages(prefix, opts)) yield* page.entries;
}
