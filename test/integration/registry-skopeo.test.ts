// Real skopeo pushing to and pulling from transship: OCI layout → docker://transship → OCI layout, byte-identical,
// multi-arch index included, on the fs store and on S3 (Ceph RGW started by the test runner); two `serve`
// processes on one bucket; an interrupted push leaves nothing visible and nothing billing.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { makeOciLayout, type BuiltImage } from '../support/images.js';
import { createTestBucket, s3TestConfig, testS3Client } from '../support/rgw.js';
import { filesUnder, layoutBlobs, scrapeMetric as metric, skopeo, snapshot, spawnServe, startTestRegistry, tempFsStore, type RunResult } from '../support/registry.js';
import { S3Store } from '../../packages/transship/src/store/s3-store.js';
import { StoreMetaStore, type MetaStore } from '../../packages/transship/src/registry/meta.js';
import type { BlobStore } from '../../packages/transship/src/store/contract.js';
import { digestOf } from '@transship/core/digest';
import { hashPassword } from '../../packages/transship/src/registry/auth.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function tempDir(prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  cleanups.push(() => rm(d, { recursive: true, force: true }));
  return d;
}

function ok(r: RunResult, what: string): void {
  assert.equal(r.code, 0, `${what} failed (${r.code}):\n${r.stderr}`);
}

async function push(host: string, image: BuiltImage, ref: string): Promise<void> {
  ok(await skopeo(['copy', '--all', '--dest-tls-verify=false', `oci:${image.path}:${image.tag}`, `docker://${host}/${ref}`]), `push ${ref}`);
}

/** Pulls `ref` into a fresh layout and checks it is the pushed image, byte for byte (index and every blob). */
async function pullAndCompare(host: string, image: BuiltImage, ref: string): Promise<void> {
  const out = await tempDir('ts-pull-');
  ok(await skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${host}/${ref}`, `oci:${out}:${image.tag}`]), `pull ${ref}`);
  const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  assert.equal(index.manifests[0]?.digest, image.manifestDigest, 'root manifest digest survives the round trip');
  const pushed = await layoutBlobs(image.path);
  const pulled = await layoutBlobs(out);
  assert.deepEqual([...pulled.keys()].sort(), [...pushed.keys()].sort());
  for (const [d, h] of pulled) assert.equal(`sha256:${h}`, d, `pulled blob ${d} has the bytes of its digest`);
}

function s3Env(): NodeJS.ProcessEnv {
  const s3 = s3TestConfig();
  if (!s3) throw new Error('no test S3');
  return { ...process.env, AWS_ENDPOINT_URL_S3: s3.endpoint, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region };
}

async function bucketKeys(bucket: string): Promise<string[]> {
  const client = testS3Client();
  try {
    const out: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
      for (const o of page.Contents ?? []) if (o.Key) out.push(o.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out.sort();
  } finally {
    client.destroy();
  }
}

async function pendingMultipart(bucket: string): Promise<number> {
  const client = testS3Client();
  try {
    return (await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads?.length ?? 0;
  } finally {
    client.destroy();
  }
}

/** Every series of a metric with its value (label set → value). */
async function metricSeries(url: string, name: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) if (line.startsWith(`${name}{`)) out.set(line.slice(name.length, line.lastIndexOf(' ')), Number(line.slice(line.lastIndexOf(' ') + 1)));
  return out;
}


test('skopeo round trip on the fs store: multi-arch index, nested repository name, byte-identical; a re-push writes nothing', async () => {
  const fs = await tempFsStore();
  cleanups.push(fs.cleanup);
  const reg = await startTestRegistry({ store: fs.store, meta: fs.meta });
  cleanups.push(() => reg.close());
  const image = await makeOciLayout(await tempDir('ts-img-'), { multiArch: true, tag: 'v1', layers: 2, seed: 'fs-roundtrip' });
  await push(reg.host, image, 'team/app/web:v1');
  await pullAndCompare(reg.host, image, 'team/app/web:v1');
  // Pull by digest too.
  await pullAndCompare(reg.host, image, `team/app/web@${image.manifestDigest}`);

  const before = await snapshot(fs.store);
  const puts = fs.store.requestCounts().put ?? 0;
  await push(reg.host, image, 'team/app/web:v1');
  assert.deepEqual(await snapshot(fs.store), before, 'an identical re-push changes nothing');
  // Only the manifest links/tags may be rewritten: no blob bytes are written again.
  const blobPuts = (fs.store.requestCounts().put ?? 0) - puts;
  assert.ok(blobPuts <= 1, `re-push wrote ${blobPuts} objects (expected at most the tag)`);

  const tags = await skopeo(['list-tags', '--tls-verify=false', `docker://${reg.host}/team/app/web`]);
  ok(tags, 'list-tags');
  assert.deepEqual((JSON.parse(tags.stdout) as { Tags: string[] }).Tags, ['v1']);
});

test('skopeo through `transship serve` on S3 (RGW): push, pull byte-identical, S3 requests per push counted', { skip: !s3TestConfig() }, async () => {
  const bucket = await createTestBucket('reg-skopeo');
  const serve = await spawnServe(['--store', `s3://${bucket}/p`], s3Env());
  cleanups.push(() => serve.stop());
  const image = await makeOciLayout(await tempDir('ts-img-'), { multiArch: true, tag: 'v1', layers: 2, seed: 's3-roundtrip' });
  const r0 = await metric(serve.url, 's3_requests_total');
  const ops0 = await metricSeries(serve.url, 's3_requests_total');
  await push(serve.host, image, 'app:v1');
  const r1 = await metric(serve.url, 's3_requests_total');
  const ops1 = await metricSeries(serve.url, 's3_requests_total');
  console.log(`# S3 requests of the fresh push by series: ${[...ops1].map(([k, v]) => [k, v - (ops0.get(k) ?? 0)] as const).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  await pullAndCompare(serve.host, image, 'app:v1');
  const r2 = await metric(serve.url, 's3_requests_total');
  await push(serve.host, image, 'app:v1');
  const r3 = await metric(serve.url, 's3_requests_total');
  await push(serve.host, image, 'other:v1');
  const r4 = await metric(serve.url, 's3_requests_total');
  const objects = image.blobs.length + image.manifests.length + 1;
  console.log(`# S3 requests: fresh push ${r1 - r0} (${objects} objects), pull ${r2 - r1}, identical re-push ${r3 - r2}, cross-repository push ${r4 - r3}`);
  const keys = await bucketKeys(bucket);
  for (const b of image.blobs) assert.ok(keys.includes(`p/blobs/sha256/${b.digest.slice(7)}`), `blob ${b.digest} stored`);
  assert.ok(keys.includes('p/repos/app/_tags/v1') && keys.includes('p/repos/other/_tags/v1'));
  // The one key besides blobs and repositories: the generated secret of shared upload sessions (upload-state.ts).
  assert.equal(keys.filter((k) => !k.startsWith('p/blobs/') && !k.startsWith('p/repos/') && k !== 'p/_keys/upload-state').length, 0, `no stray keys: ${keys.join(', ')}`);
  assert.equal(await pendingMultipart(bucket), 0);
  assert.equal(await serve.stop(), 0, `serve exits cleanly on SIGTERM:\n${serve.output()}`);
});

test('two serve processes on one bucket: push through one, pull through the other; concurrent pushes of one image store it once and whole', { skip: !s3TestConfig() }, async () => {
  const bucket = await createTestBucket('reg-two');
  const env = s3Env();
  const a = await spawnServe(['--store', `s3://${bucket}`], env);
  cleanups.push(() => a.stop());
  const b = await spawnServe(['--store', `s3://${bucket}`], env);
  cleanups.push(() => b.stop());
  const first = await makeOciLayout(await tempDir('ts-img-'), { multiArch: true, tag: 'v1', seed: 'two-a' });
  await push(a.host, first, 'shared/app:v1');
  await pullAndCompare(b.host, first, 'shared/app:v1');

  const same = await makeOciLayout(await tempDir('ts-img-'), { tag: 'v2', layers: 3, layerSize: 3 * 1024 * 1024, seed: 'two-race' });
  await Promise.all([push(a.host, same, 'race/one:v2'), push(b.host, same, 'race/two:v2')]);
  await pullAndCompare(a.host, same, 'race/two:v2');
  await pullAndCompare(b.host, same, 'race/one:v2');
  const keys = await bucketKeys(bucket);
  const blobKeys = keys.filter((k) => k.startsWith('blobs/'));
  assert.equal(new Set(blobKeys).size, blobKeys.length);
  for (const blob of same.blobs) assert.equal(blobKeys.filter((k) => k === `blobs/sha256/${blob.digest.slice(7)}`).length, 1, `${blob.digest} stored once`);
  assert.equal(keys.filter((k) => k.startsWith('claims/')).length, 0, 'no claim markers left');
  assert.equal(await pendingMultipart(bucket), 0);
});

for (const backend of ['fs', 's3'] as const) {
  test(`interrupted push (skopeo killed mid-upload) leaves nothing visible on ${backend}, no spool and no multipart upload`, { skip: backend === 's3' && !s3TestConfig() }, async () => {
    const spool = await tempDir('ts-spool-');
    let store: BlobStore;
    let meta: MetaStore;
    let bucket: string | undefined;
    if (backend === 'fs') {
      const fs = await tempFsStore();
      cleanups.push(fs.cleanup);
      store = fs.store;
      meta = fs.meta;
    } else {
      const s3 = s3TestConfig();
      if (!s3) return;
      bucket = await createTestBucket('reg-interrupt');
      const conn = { bucket, prefix: '', endpoint: s3.endpoint, s3Region: s3.region, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
      store = new S3Store({ ...conn, multipartThreshold: 8 * 1024 * 1024, partSize: 5 * 1024 * 1024 });
      meta = new StoreMetaStore(store);
      const opened = store;
      cleanups.push(() => opened.close());
    }
    const reg = await startTestRegistry({ store, meta, uploadDir: spool });
    cleanups.push(() => reg.close());
    const image = await makeOciLayout(await tempDir('ts-img-'), { tag: 'big', layers: 1, layerSize: 96 * 1024 * 1024, gzip: false, seed: `interrupt-${backend}` });
    const before = await snapshot(store, meta);
    let killed = false;
    const result = await skopeo(['copy', '--dest-tls-verify=false', `oci:${image.path}:big`, `docker://${reg.host}/victim:big`], {
      onSpawn: (child) => {
        const poll = setInterval(() => {
          // Kill once the big layer is streaming into a session.
          if (reg.ctx.sessions.count > 0 && !killed) {
            setTimeout(() => {
              killed = true;
              child.kill('SIGKILL');
            }, 200);
            clearInterval(poll);
          }
        }, 20);
        child.once('exit', () => clearInterval(poll));
      },
    });
    assert.ok(killed, `skopeo was killed mid-upload (exit ${result.code}: ${result.stderr.slice(-300)})`);
    // The half-received chunk is rolled back and the session stays invisible.
    const after = await snapshot(store, meta);
    assert.deepEqual(after, before, 'nothing became visible');
    assert.equal(await store.statBlob(image.layers[0]?.digest ?? digestOf('')), undefined);
    if (bucket) {
      // The rolled-back chunk's staged parts are aborted in the background as the server notices the dead client.
      let pending = await pendingMultipart(bucket);
      for (let i = 0; i < 100 && pending > 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
        pending = await pendingMultipart(bucket);
      }
      assert.equal(pending, 0, 'no multipart upload left billing');
    }
    await reg.close();
    assert.deepEqual(await filesUnder(spool), [], 'spools removed at shutdown');
  });
}

test('skopeo with auth on: token flow with credentials, pull by another user denied, anonymous push refused', async () => {
  const fs = await tempFsStore();
  cleanups.push(fs.cleanup);
  const reg = await startTestRegistry({
    store: fs.store,
    meta: fs.meta,
    auth: {
      tokenSecret: 'integration-secret-0123456789',
      users: { alice: hashPassword('alice-pw'), bob: hashPassword('bob-pw') },
      access: [{ users: ['*'], repositories: ['{user}/*'], actions: ['pull', 'push'] }],
    },
  });
  cleanups.push(() => reg.close());
  const image = await makeOciLayout(await tempDir('ts-img-'), { multiArch: true, tag: 'v1', seed: 'auth' });
  ok(await skopeo(['copy', '--all', '--dest-tls-verify=false', '--dest-creds', 'alice:alice-pw', `oci:${image.path}:v1`, `docker://${reg.host}/alice/app:v1`]), 'authenticated push');
  const out = await tempDir('ts-pull-');
  ok(await skopeo(['copy', '--all', '--src-tls-verify=false', '--src-creds', 'alice:alice-pw', `docker://${reg.host}/alice/app:v1`, `oci:${out}:v1`]), 'authenticated pull');
  const bob = await skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', 'bob:bob-pw', `docker://${reg.host}/alice/app:v1`]);
  assert.notEqual(bob.code, 0, 'bob may not pull alice/app');
  const before = await snapshot(fs.store);
  const anon = await skopeo(['copy', '--dest-tls-verify=false', `oci:${image.path}:v1`, `docker://${reg.host}/alice/app:anon`]);
  assert.notEqual(anon.code, 0, 'anonymous push refused');
  assert.match(anon.stderr, /401|unauthorized|denied/i);
  assert.deepEqual(await snapshot(fs.store), before);
});
