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
