// The CLI against real RGW: credentials from the standard AWS variables, --json request counts, and SIGINT in the
// middle of a multipart upload (exit 130 within 2 s, multipart aborted, the re-run uploads only what is missing).
import { test } from 'node:test';
import { CLI } from '../support/cli.js';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { makeOciLayout } from '../support/images.js';
import { createTestBucket, s3TestConfig, testS3Client } from '../support/rgw.js';
import { startS3Proxy } from '../support/s3-proxy.js';
import { spawnServe } from '../support/registry.js';

const cfg = s3TestConfig();
if (!cfg) throw new Error('TRANSSHIP_TEST_S3_* not set: run through `npm test`');
const bin = CLI;
const tmp = await mkdtemp(join(tmpdir(), 'ts-cli-s3-'));
test.after(() => rm(tmp, { recursive: true, force: true }));

function env(endpoint: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    AWS_ENDPOINT_URL_S3: endpoint,
    AWS_ACCESS_KEY_ID: cfg!.accessKeyId,
    AWS_SECRET_ACCESS_KEY: cfg!.secretAccessKey,
    AWS_REGION: cfg!.region,
    XDG_CACHE_HOME: join(tmp, 'cache'),
    TRANSSHIP_CONFIG: '',
  };
}

test('cli: copy to s3:// with AWS_* variables, --json reports S3 requests; unreachable endpoint exits 1 with a clear message', async () => {
  const bucket = await createTestBucket('cli');
  const img = await makeOciLayout(join(tmp, 'small'), { tag: 'v1', layers: 3, layerSize: 100_000, seed: 'cli-small' });
  const r = spawnSync(process.execPath, [bin, 'copy', `oci:${img.path}:v1`, `s3://${bucket}/pfx/app:v1`, '--json', '--no-cache'], { encoding: 'utf8', env: env(cfg.endpoint) });
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.equal(summary.blobs.uploaded, 4);
  assert.ok(summary.requests.total <= 8, JSON.stringify(summary.requests));
  assert.equal(summary.requests.byOperation.PutObject, 7, '4 blobs + manifest + link + tag');
  const down = spawnSync(process.execPath, [bin, 'copy', `oci:${img.path}:v1`, `s3://${bucket}/pfx/app:v1`, '--json', '--no-cache'], {
    encoding: 'utf8',
    env: { ...env('http://127.0.0.1:9'), TRANSSHIP_CONFIG: '' },
    timeout: 120_000,
  });
  assert.equal(down.status, 1);
  assert.match(JSON.parse(down.stdout).error.message, /cannot reach http:\/\/127\.0\.0\.1:9/);
});

test('cli: SIGINT mid-upload exits 130 within 2 s with the multipart upload aborted; the re-run uploads only what is missing', async () => {
  const bucket = await createTestBucket('sigint');
  // Slow the backend down so the copy is surely in flight when the signal arrives.
  const proxy = await startS3Proxy({ target: cfg.endpoint, faults: { rate: 1, kinds: ['delay'], delayMs: 150, seed: 3 } });
  const img = await makeOciLayout(join(tmp, 'big'), { tag: 'v1', layers: [{ seed: 'small-1', size: 50_000, gzip: false }, { seed: 'big-1', size: 150 * 1024 * 1024, gzip: false }], seed: 'sigint' });
  const child = spawn(process.execPath, [bin, 'copy', `oci:${img.path}:v1`, `s3://${bucket}/app:v1`, '--json', '--no-cache'], { env: env(proxy.url), stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  // Wait until parts are moving.
  const deadline = Date.now() + 60_000;
  while (!proxy.log.some((e) => e.operation === 'UploadPart') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.ok(proxy.log.some((e) => e.operation === 'UploadPart'), 'the multipart upload started');
  const sent = Date.now();
  child.kill('SIGINT');
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  const took = Date.now() - sent;
  assert.equal(code, 130, stderr);
  assert.ok(took <= 2000, `exited ${took} ms after SIGINT`);
  assert.doesNotMatch(stderr, /did not stop within/, 'work unwound by itself, not by the safety timer');
  assert.ok(proxy.log.some((e) => e.operation === 'AbortMultipartUpload'), 'multipart upload aborted');
  const s3 = testS3Client();
  assert.equal((await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads?.length ?? 0, 0, 'nothing left billing');
  s3.destroy();
  await proxy.close();
  // Run again (no faults): the small layer that made it is skipped, the big one is uploaded.
  const again = spawnSync(process.execPath, [bin, 'copy', `oci:${img.path}:v1`, `s3://${bucket}/app:v1`, '--json', '--no-cache'], { encoding: 'utf8', env: env(cfg.endpoint), timeout: 120_000 });
  assert.equal(again.status, 0, again.stderr);
  const summary = JSON.parse(again.stdout);
  assert.ok(summary.blobs.skipped.exists >= 1, JSON.stringify(summary.blobs));
  assert.equal(summary.blobs.uploaded + (summary.blobs.skipped.exists ?? 0), 3);
});

test('regression: no runtime warning on a supported Node — a real S3 copy and a serve start write only JSON log lines to stderr', async () => {
  // The CLI used to patch process.emitWarning to hide the AWS SDK's NodeVersionSupportWarning on Node 20; on a
  // supported LTS there is nothing to hide, and nothing may be printed but the structured log.
  const bucket = await createTestBucket('cli-warn');
  const img = await makeOciLayout(join(tmp, 'warn'), { tag: 'v1', layers: 1, layerSize: 10_000, seed: 'cli-warn' });
  const quietEnv = { ...env(cfg.endpoint), TRANSSHIP_LOG_LEVEL: 'info' };
  const r = spawnSync(process.execPath, [bin, 'copy', `oci:${img.path}:v1`, `s3://${bucket}/w/app:v1`, '--no-cache'], { encoding: 'utf8', env: quietEnv });
  assert.equal(r.status, 0, r.stderr);
  const serve = await spawnServe(['--store', `s3://${bucket}/w`], quietEnv);
  const ok = await fetch(`${serve.url}/v2/app/tags/list`);
  assert.equal(ok.status, 200);
  await serve.stop();
  for (const [what, stderr] of [['copy', r.stderr], ['serve', serve.stderr()]] as const) {
    for (const line of stderr.split('\n').filter((l) => l.trim() !== '')) {
      assert.doesNotThrow(() => JSON.parse(line), `${what} wrote a non-JSON line to stderr: ${line}`);
    }
    assert.doesNotMatch(stderr, /Warning|NodeVersionSupport/, what);
  }
});
