// Test support for placement on real RGW: the test bed's S3 settings, one S3 store per "region" (each region its
// own radosgw endpoint when the test bed started several), and a push of a built image into a store.
import { copyImage } from '../../packages/transship/src/transfer/copy.js';
import { StoreDestination } from '../../packages/transship/src/transfer/store-destination.js';
import { openOciLayoutSource } from '../../packages/transship/src/transfer/sources/oci-layout.js';
import { S3Store } from '../../packages/transship/src/store/s3-store.js';
import type { BuiltImage } from './images.js';
import { s3TestConfig, type S3TestConfig } from './rgw.js';

export function placementTestConfig(): { cfg: S3TestConfig; endpoints: string[] } {
  const cfg = s3TestConfig();
  if (!cfg) throw new Error('TRANSSHIP_TEST_S3_* not set: run through `npm test`');
  return { cfg, endpoints: cfg.endpoints.length >= 2 ? cfg.endpoints : [cfg.endpoint, cfg.endpoint] };
}

/** An S3 store for `region` with a short retry budget (tests of a region that is down must not wait long). */
export function regionStore(cfg: S3TestConfig, bucket: string, region: string, endpoint: string): S3Store {
  return new S3Store({ bucket, endpoint, region, accessKeyId: cfg.accessKeyId, secretAccessKey: cfg.secretAccessKey, s3Region: cfg.region, retry: { maxAttempts: 3, baseDelayMs: 5, maxDelayMs: 20, maxElapsedMs: 5000 } });
}

export async function pushTo(img: BuiltImage, s: S3Store, repo: string, tag: string) {
  const src = await openOciLayoutSource(img.path, { tag: img.tag });
  try {
    return await copyImage(src, new StoreDestination(s, repo, tag));
  } finally {
    await src.close();
  }
}
