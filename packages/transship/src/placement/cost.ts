// `transship cost`: turns measured request counts, stored bytes, dedup savings and cross-region bytes into money at
// a price table. Defaults are AWS S3 Standard list prices (us-east-1): PUT/COPY/POST/LIST $0.005 per 1,000,
// GET/HEAD and others $0.0004 per 1,000, storage $0.023 per GB-month, inter-region transfer $0.02 per GB.
import type { Config } from '../config/config.js';

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
 * How long an idle promoted copy is kept by default: the break-even residency T* = crossRegionPerGb ÷ storageGbMonth
 * months, i.e. the time after which storing a copy nobody reads has cost as much as the one crossing it could still
 * save. At AWS list prices 0.02 ÷ 0.023 months ≈ 26 days. It is the ski-rental point: holding an idle copy longer
 * risks more than a re-fetch costs, dropping it sooner re-fetches blobs whose next read was coming anyway.
 * Free storage: never evict (Infinity). Free transfer: a copy is worth nothing, evict whatever is idle (0).
 */
export function breakEvenResidencyMs(p: Prices): number {
  if (p.storageGbMonth <= 0) return Number.POSITIVE_INFINITY;
  if (p.crossRegionPerGb <= 0) return 0;
  const ms = (p.crossRegionPerGb / p.storageGbMonth) * MONTH_MS;
  // Whole hours (626 h at AWS list prices) or, below an hour, whole seconds: readable in status output and JSON.
  const unit = ms >= 3600_000 ? 3600_000 : 1000;
  return Math.floor(ms / unit) * unit;
}

/**
 * The default promotion threshold: how many remote reads of a blob within the demand window justify keeping a copy
 * in the reading region.
 *
 * With eviction (promoted copies are a bounded cache: removed once idle for `evictAfterIdleMs`, src/placement/evict.ts)
 * a copy made on the first remote read costs at most (active time + T) × storage, where the active time is paid back
 * by the reads it serves (each saves a crossing, and a gap between reads shorter than T* costs less storage than a
 * crossing). Per (blob, region) and any read sequence, promoting on the first read then costs at most
 * (1 + storage(T) ÷ transfer) × the cheapest placement in hindsight: the worst case is a blob read exactly once, which
 * pays its crossing plus T of storage. Waiting for the k-th read (k ≥ 2) is never better in the worst case: a blob
 * read exactly k times pays k crossings where one would do, plus the same T of storage after its last read. So with
 * T ≤ T* (storage over T at most one crossing, ratio ≤ 2) the threshold is 1 — the bench's 200-image workload saves
 * 28% of the bytes of the 2nd-read rule that way (bench/RESULTS.md, placement).
 * Not modelled: per-copy request charges. A promotion is two PUT-class requests (the copy and its marker, ≈ $0.00001
 * at list prices), which outweigh one crossing of a blob below ≈ 0.5 MB — manifests, configs, the bench's 128–256 KiB
 * layers. A size-aware threshold (first read above that size, 2nd read below) would be the refinement; bytes-wise
 * small blobs do not matter.
 *
 * Without eviction (`evictAfterIdle: never`, or T beyond T*) a copy is paid for as long as it is kept, so expected
 * cost decides: if the observed rate (k reads per window) goes on, not promoting costs k × crossRegionPerGb per
 * window, promoting costs storageGbMonth × window/month; promote once k ≥ storage-per-window ÷ transfer, and never
 * below 2 (one read is no rate: most (image, region) pairs of a skewed workload are read exactly once, and a copy
 * kept forever for them saves nothing).
 */
export function promotionThreshold(p: Prices, windowMs: number, evictAfterIdleMs: number = Number.POSITIVE_INFINITY): number {
  // Free transfer: a copy never pays for itself (Infinity: Rules turns that into `policy: never`).
  if (p.crossRegionPerGb <= 0) return Number.POSITIVE_INFINITY;
  if (Number.isFinite(evictAfterIdleMs) && p.storageGbMonth * (evictAfterIdleMs / MONTH_MS) <= p.crossRegionPerGb) return 1;
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
