// `transship migrate` on the S3 store (real Ceph RGW): the same story as the fs test, in batches smaller than the
// number of keys so several DeleteObjects requests run, and on a bucket prefix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { S3Store } from '../../src/store/s3-store.js';
import { migrateStory } from '../support/migrate-scenario.js';
import { createTestBucket, s3TestConfig } from '../support/rgw.js';

const cfg = s3TestConfig();
if (!cfg) throw new Error('TRANSSHIP_TEST_S3_* not set: run through `npm test`');

test('migrate (RGW): dry run changes nothing, migrate moves every old key once with batch deletes, re-run is a no-op', async () => {
  const store = new S3Store({ bucket: await createTestBucket('migrate'), prefix: 'm', endpoint: cfg.endpoint, accessKeyId: cfg.accessKeyId, secretAccessKey: cfg.secretAccessKey, s3Region: cfg.region });
  try {
    await migrateStory(store, 4);
    assert.ok((store.requestCounts().DeleteObjects ?? 0) >= 3, 'deletes went out as batches');
  } finally {
    await store.close();
  }
});
