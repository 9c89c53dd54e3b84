// Listing in pages whose request time is known. The sweep's freshness argument (docs/gc.md) counts from the moment
// a page was *asked for*: a blob's modification time and its touch markers are trusted only as of that moment, and
// the delete must follow within a budget. The driver's list() streams and fetches its next page when the consumer
// asks for the entry after a page's last, which hides that moment; so each page here is a fresh list() call
// (`startAfter` the previous page's last key) from which at most one backend page (1000 keys) is consumed.
import type { ObjectDriver, ObjectInfo, Signalled } from '../store/contract.js';

/** S3's page size; the fs driver has no pages, so this also bounds what one fs "page" stats. */
export const PAGE_KEYS = 1000;

export interface ObjectPage {
  /** Local clock, ms: taken before the request for this page was sent. */
  sentAt: number;
  entries: ObjectInfo[];
}

/**
 * `limit` (≤ PAGE_KEYS, asked before each page) lets the caller take smaller pages — the sweep does when its deletes
 * run close to their time budget; the rest of a backend page is simply listed again by the next call.
 */
export async function* pages(driver: ObjectDriver, prefix: string, opts: Signalled & { startAfter?: string | undefined; now?: () => number; limit?: () => number } = {}): AsyncIterable<ObjectPage> {
  const now = opts.now ?? Date.now;
  let after = opts.startAfter;
  for (;;) {
    const limit = Math.max(1, Math.min(PAGE_KEYS, Math.floor(opts.limit?.() ?? PAGE_KEYS)));
    const sentAt = now();
    const entries: ObjectInfo[] = [];
    for await (const o of driver.list(prefix, { signal: opts.signal, startAfter: after })) {
      entries.push(o);
      if (entries.length === limit) break; // never asks the driver for its second page
    }
    if (entries.length) yield { sentAt, entries };
    // Fewer than asked: the listing is exhausted (a backend page holds at least `limit` ≤ 1000 keys when more exist).
    if (entries.length < limit) return;
    after = entries.at(-1)?.key;
  }
}
