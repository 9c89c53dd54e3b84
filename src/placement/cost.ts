// `transship cost`: turns measured request counts, stored bytes, dedup savings and cross-region bytes into money at
// a price table. Defaults are AWS S3 Standard list prices (us-east-1): PUT/COPY/POST/LIST $0.005 per 1,000,
// GET/HEAD and others $0.0004 per 1,000, storage $0.023 per GB-month, inter-region transfer $0.02 per GB.
import type { Config } from '../core/config.js';

export const DEFAULT_PRICES = { putPer1000: 0.005, getPer1000: 0.0004, storageGbMonth: 0.023, crossRegionPerGb: 0.02 };
export type Prices = typeof DEFAULT_PRICES;

/** S3 operations billed at the PUT/LIST tier; everything else is the GET tier (DELETE is free). */
const PUT_CLASS = new Set(['PutObject', 'CopyObject', 'UploadPart', 'UploadPartCopy', 'CreateMultipartUpload', 'CompleteMultipartUpload', 'ListObjectsV2', 'ListObjects', 'ListMultipartUploads', 'ListBuckets', 'CreateBucket']);
const FREE = new Set(['DeleteObject', 'AbortMultipartUpload', 'DeleteObjects']);

export interface CostInput {
  requestsByOperation: Record<string, number>;
  storedBytes: number;
  dedupSkippedBytes: number;
  crossRegionBytes: number;
}

export function prices(config: Config): Prices {
  return { ...DEFAULT_PRICES, ...config.prices };
}

const GB = 1e9;
const MONTH_MS = 30 * 24 * 3600_000;

/**
 * The default promotion threshold: how many remote reads of a blob within the demand window justify keeping a copy
 * in the reading region. Expected cost, per byte: if the observed rate (k reads per window) goes on, not promoting
 * costs k × crossRegionPerGb per window, promoting costs storageGbMonth × window/month for as long as the copy is
 * kept. So promote once k ≥ storage-per-window ÷ transfer. With AWS list prices that is ≈ 0.0016 reads for a 1 h
 * window and ≈ 1.15 for a 30-day one: any repeated read pays for the copy.
 *
 * It never goes below 2: one read is no rate. Most (image, region) pairs of a skewed workload are read exactly once
 * (a CI job, one node pulling an old tag; 59 of 94 in bench/placement.ts), and promoting those on first read would
 * store a copy per region forever (promoted copies are not evicted) to save nothing. The second read within the
 * window is the first evidence of repeated demand, and each read waited for after that is one more crossing that
 * buys no information the price table has not already settled — which is why 3 was too many.
 */
export function promotionThreshold(p: Prices, windowMs: number): number {
  // Free transfer: a copy never pays for itself (Infinity: Rules turns that into `policy: never`).
  if (p.crossRegionPerGb <= 0) return Number.POSITIVE_INFINITY;
  const storagePerWindow = p.storageGbMonth * (windowMs / MONTH_MS);
  return Math.max(2, Math.ceil(storagePerWindow / p.crossRegionPerGb));
}

export function estimateCost(input: CostInput, p: Prices) {
  let put = 0;
  let get = 0;
  for (const [op, n] of Object.entries(input.requestsByOperation)) {
    if (FREE.has(op)) continue;
    if (PUT_CLASS.has(op)) put += n;
    else get += n;
  }
  const requests = { putClass: put, getClass: get, cost: (put / 1000) * p.putPer1000 + (get / 1000) * p.getPer1000 };
  const storage = { bytes: input.storedBytes, monthlyCost: (input.storedBytes / GB) * p.storageGbMonth };
  const dedup = { bytesSaved: input.dedupSkippedBytes, monthlyStorageSaved: (input.dedupSkippedBytes / GB) * p.storageGbMonth };
  const crossRegion = { bytes: input.crossRegionBytes, cost: (input.crossRegionBytes / GB) * p.crossRegionPerGb };
  return { prices: p, requests, storage, dedup, crossRegion, total: requests.cost + crossRegion.cost + storage.monthlyCost };
}

/** Parses the counters `cost` needs out of Prometheus text exposition (a --metrics-file or a /metrics page). */
export function costInputFromMetrics(text: string): Omit<CostInput, 'storedBytes'> {
  const requestsByOperation: Record<string, number> = {};
  let dedupSkippedBytes = 0;
  let crossRegionBytes = 0;
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+([0-9.eE+-]+)/.exec(line);
    if (!m) continue;
    const [, name, labels = '', value] = m;
    const v = Number(value);
    if (!Number.isFinite(v)) continue;
    if (name === 's3_requests_total') {
      const op = /operation="([^"]*)"/.exec(labels)?.[1] ?? 'unknown';
      requestsByOperation[op] = (requestsByOperation[op] ?? 0) + v;
    } else if (name === 'blob_skipped_bytes_total') dedupSkippedBytes += v;
    else if (name === 'cross_region_upload_bytes_total') crossRegionBytes += v;
  }
  return { requestsByOperation, dedupSkippedBytes, crossRegionBytes };
}
