// The CLI as users run it (a subprocess): the README's main job, --json summaries, exit codes, verify, metrics file.
import { test } from 'node:test';
import { CLI } from '../support/cli.js';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, writeFile, rm, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnServe } from '../support/registry.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = CLI;
const tmp = await mkdtemp(join(tmpdir(), 'ts-cli-'));
test.after(() => rm(tmp, { recursive: true, force: true }));

function run(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [bin, ...args], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, XDG_DATA_HOME: join(tmp, 'data'), XDG_CACHE_HOME: join(tmp, 'cache'), TRANSSHIP_CONFIG: '', ...env },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('README main job: copy the example into the embedded store; the second run uploads nothing', () => {
  const first = run(['copy', 'oci:examples/hello:latest', 'store:hello:latest', '--json']);
  assert.equal(first.code, 0, first.stderr);
  const s1 = JSON.parse(first.stdout);
  assert.equal(s1.blobs.total, 6);
  assert.equal(s1.blobs.uploaded, 6);
  assert.equal(s1.manifests, 3);
  const second = run(['copy', 'oci:examples/hello:latest', 'store:hello:latest', '--json']);
  assert.equal(second.code, 0, second.stderr);
  const s2 = JSON.parse(second.stdout);
  assert.equal(s2.blobs.uploaded, 0);
  assert.equal(s2.bytes.uploaded, 0);
  assert.equal(s2.blobs.skipped.cache, 6, 'the presence cache answered');
  const ls = run(['ls', '--json']);
  assert.deepEqual(JSON.parse(ls.stdout).repositories, [{ repository: 'hello', tags: [{ tag: 'latest', digest: s1.digest }] }]);
});

test('copy out to an OCI layout and back in: same digest; verify is clean (exit 0)', () => {
  const store = `dir:${join(tmp, 'store-a')}`;
  assert.equal(run(['copy', 'oci:examples/hello:latest', `${store}/hello:v1`]).code, 0);
  const out = join(tmp, 'layout-out');
  const r = run(['copy', `${store}/hello:v1`, `oci:${out}:v1`, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const inspect = run(['inspect', `oci:${out}:v1`, '--json']);
  assert.equal(JSON.parse(inspect.stdout).digest, JSON.parse(r.stdout).digest);
  const v = run(['verify', store, '--json']);
  assert.equal(v.code, 0);
  assert.equal(JSON.parse(v.stdout).ok, true);
});

test('verify finds a corrupted blob and a missing one: exit 3 with each problem named', async () => {
  const dir = join(tmp, 'store-corrupt');
  assert.equal(run(['copy', 'oci:examples/hello:latest', `dir:${dir}/hello:v1`]).code, 0);
  const blobs = (await readdir(join(dir, 'blobs', 'sha256'))).sort();
  const victim = blobs[0]!;
  await writeFile(join(dir, 'blobs', 'sha256', victim), 'flipped bits');
  // A layer the root index's graph needs: find it from inspect and delete it.
  const graph = JSON.parse(run(['inspect', `dir:${dir}/hello:v1`, '--json']).stdout);
  const gone = (graph.blobs as Array<{ digest: string }>).map((b) => b.digest.slice(7)).find((h) => h !== victim)!;
  await rm(join(dir, 'blobs', 'sha256', gone));
  const v = run(['verify', `dir:${dir}`, '--json']);
  assert.equal(v.code, 3);
  const report = JSON.parse(v.stdout);
  assert.ok(report.problems.some((p: { kind: string; digest: string }) => p.kind === 'corrupt' && p.digest === `sha256:${victim}`), v.stdout);
  assert.ok(report.problems.some((p: { kind: string; digest: string }) => p.kind === 'missing' && p.digest === `sha256:${gone}`), v.stdout);
});

test('exit codes: bad reference → 2 with TS_INVALID_REFERENCE; hostile repo name → 2; missing source → 1', () => {
  const bad = run(['copy', 'nonsense', 'store:x:y']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /TS_INVALID_REFERENCE/);
  const hostile = run(['copy', 'oci:examples/hello:latest', `dir:${join(tmp, 's')}//../../etc:latest`]);
  assert.equal(hostile.code, 2);
  assert.match(hostile.stderr, /TS_INVALID_NAME/);
  const missing = run(['copy', `oci:${join(tmp, 'nope')}:latest`, 'store:x:y', '--json']);
  assert.equal(missing.code, 1);
  assert.equal(JSON.parse(missing.stdout).error.code, 'TS_NOT_FOUND');
  const usage = run(['copy', 'only-one-arg']);
  assert.equal(usage.code, 2);
});

test('config errors are exit 2 with the field named', async () => {
  const cfg = join(tmp, 'bad.yaml');
  await writeFile(cfg, 'concurrency: zero\n');
  const r = run(['--config', cfg, 'ls']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /TS_CONFIG_INVALID.*concurrency/s);
});

test('serve: a bad blob cache bound is exit 2 with the flag or field named, before anything listens', async () => {
  const flag = run(['serve', '--store', `dir:${join(tmp, 'serve-store')}`, '--listen', '127.0.0.1:0', '--blob-cache-max-bytes', 'lots']);
  assert.equal(flag.code, 2);
  assert.match(flag.stderr, /TS_USAGE.*--blob-cache-max-bytes "lots"/s);
  const cfg = join(tmp, 'bad-cache.yaml');
  await writeFile(cfg, 'serve:\n  blobCache:\n    maxBytes: -1\n');
  const field = run(['--config', cfg, 'serve', '--listen', '127.0.0.1:0']);
  assert.equal(field.code, 2);
  assert.match(field.stderr, /TS_CONFIG_INVALID.*blobCache\.maxBytes/s);
});

test('--metrics-file writes node_exporter textfile metrics with the seed names', async () => {
  const file = join(tmp, 'metrics', 'transship.prom');
  const r = run(['copy', 'oci:examples/hello:latest', `dir:${join(tmp, 'store-m')}/hello:v1`, '--metrics-file', file, '--no-cache']);
  assert.equal(r.code, 0, r.stderr);
  const text = await readFile(file, 'utf8');
  for (const name of ['s3_put_skipped_due_to_dedup', 'upload_retry_total', 'upload_retry_latency_seconds', 'blob_hit_ratio_local_vs_remote', 'cross_region_upload_bytes_total']) {
    assert.match(text, new RegExp(`# TYPE ${name} `), name);
  }
  assert.doesNotMatch(text, /containerd_/, 'a copy exports no containerd series');
});

test('regression: serve exports only its own metrics (no containerd_watch_subscription_up 0 firing the watch alert on every serve pod)', async () => {
  const serve = await spawnServe(['--store', `dir:${join(tmp, 'store-serve-metrics')}`], { ...process.env, TRANSSHIP_CONFIG: '' });
  try {
    const text = await (await fetch(`${serve.url}/metrics`)).text();
    assert.match(text, /# TYPE registry_requests_total /);
    assert.match(text, /# TYPE upload_retry_total /);
    assert.doesNotMatch(text, /containerd_/);
  } finally {
    await serve.stop();
  }
});
