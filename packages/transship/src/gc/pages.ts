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

export async function* pages(driver: ObjectDriver, prefix: string, opts: Signalled & { startAfter?: string | undefined; now?: () => number } = {}): AsyncIterable<ObjectPage> {
  const now = opts.now ?? Date.now;
  let after = opts.startAfter;
  for (;;) {
    const sentAt = now();
    const entries: ObjectInfo[] = [];
    for await (const o of driver.list(prefix, { signal: opts.signal, startAfter: after })) {
      entries.push(o);
      if (entries.length === PAGE_KEYS) break; // never asks the driver for its second page
    }
    if (entries.length) yield { sentAt, entries };
    if (entries.length < PAGE_KEYS) return;
    after = entries.at(-1)?.key;
  }
}
