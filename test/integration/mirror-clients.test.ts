// The pull-through mirror with real parts: Distribution from Debian as the upstream (filesystem storage, seeded with
// skopeo), a counting proxy in front of it (so upstream requests are counted where they arrive), `transship serve`
// (the compiled CLI) with a `mirror:` config, and real clients: skopeo through the path prefix, 4 concurrent skopeo
// pulls of an uncached image (each upstream blob fetched once), containerd pulling through a hosts.toml mirror entry
// (`?ns=`) and running the image, the same tag pulled and run with the upstream stopped, and a moved tag picked up
// after the TTL.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDistribution } from '../support/distribution.js';
import { startCountingProxy } from '../support/counting-proxy.js';
import { makeOciLayout } from '../support/images.js';
import { busyboxLayout } from '../support/busybox.js';
import { skopeo, spawnServe } from '../support/registry.js';
import { startContainerd } from '../support/containerd.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

const TTL_SECONDS = 1;

interface Blob {
  digest: string;
  size: number;
}

test('transship mirrors Distribution for skopeo and containerd: one upstream fetch per blob, serve-stale, TTL', { skip: process.getuid?.() !== 0 ? 'needs root (Debian packages, containerd)' : false, timeout: 600_000 }, async () => {
  const work = await mkdtemp(join(tmpdir(), 'ts-mirror-it-'));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  const dist = await startDistribution({});
  cleanups.push(() => dist.stop());
  const proxy = await startCountingProxy(dist.url);
  cleanups.push(() => proxy.stop());
  const seed = async (src: string, ref: string): Promise<void> => {
    const r = await skopeo(['copy', '--dest-tls-verify=false', src, `docker://${dist.host}/${ref}`]);
    assert.equal(r.code, 0, r.stderr);
  };
  const small = await makeOciLayout(join(work, 'small'), { tag: 'v1', layers: 2, layerSize: 64 * 1024, seed: 'mirror-it-small' });
  const big = await makeOciLayout(join(work, 'big'), { tag: 'v1', layers: [{ size: 16 * 1024 * 1024, seed: 'mirror-it-big', gzip: false }, { size: 4096, seed: 'mirror-it-big-2' }], seed: 'mirror-it-big' });
  await seed(`oci:${small.path}:v1`, 'team/small:v1');
  await seed(`oci:${big.path}:v1`, 'team/big:v1');
  await seed(`oci:${await busyboxLayout(join(work, 'bb1'))}:v1`, 'tools/busybox:v1');

  const store = join(work, 'store');
  const config = join(work, 'transship.yaml');
  await writeFile(config, JSON.stringify({ mirror: { upstreams: [{ registry: proxy.host, url: proxy.url, prefix: 'upstream', tagTtl: `${TTL_SECONDS}s` }] } }));
  const serve = await spawnServe(['--store', `dir:${store}`, '--config', config]);
  cleanups.push(() => serve.stop());

  // skopeo through the path prefix: the pulled image is the upstream's, byte for byte.
  const out = join(work, 'out-small');
  const pulled = await skopeo(['copy', '--src-tls-verify=false', `docker://${serve.host}/upstream/team/small:v1`, `oci:${out}:v1`]);
  assert.equal(pulled.code, 0, pulled.stderr);
  const inspect = await skopeo(['inspect', '--raw', `oci:${out}:v1`]);
  assert.equal(inspect.code, 0, inspect.stderr);

  // 4 concurrent pulls of an uncached image: each upstream blob is fetched once.
  proxy.reset();
  const pulls = await Promise.all([0, 1, 2, 3].map((i) => skopeo(['copy', '--src-tls-verify=false', `docker://${serve.host}/upstream/team/big:v1`, `oci:${join(work, `out-big-${i}`)}:v1`], { timeoutMs: 300_000 })));
  for (const p of pulls) assert.equal(p.code, 0, p.stderr);
  // skopeo compresses the uncompressed layer on its way into Distribution: the upstream's own manifest says what it holds.
  const upstreamManifest = (await (await fetch(`${dist.url}/v2/team/big/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json()) as { config: Blob; layers: Blob[] };
  const blobs = [upstreamManifest.config, ...upstreamManifest.layers];
  for (const blob of blobs) assert.equal(proxy.count('GET', new RegExp(`/blobs/${blob.digest}$`)), 1, `upstream GETs of ${blob.digest} (${blob.size} bytes)`);
  assert.equal(proxy.count('GET', /\/team\/big\/manifests\/v1$/), 1, 'the tag fetched once for 4 clients');
  const bigBytes = blobs.reduce((a, b) => a + b.size, 0);
  process.stdout.write(`# mirror: 4 concurrent skopeo pulls of ${bigBytes} blob bytes → ${proxy.bytes} upstream body bytes, ${[...proxy.counts.values()].reduce((a, b) => a + b, 0)} upstream requests\n`);
  assert.ok(proxy.bytes < bigBytes * 1.1, `upstream bytes ${proxy.bytes} ≈ 1× the image (${bigBytes})`);

  // containerd through a hosts.toml mirror entry: it sends ?ns=<upstream>, the mirror serves from its store.
  const ctrd = await startContainerd();
  cleanups.push(() => ctrd.stop());
  const hostsDir = join(work, 'certs.d');
  await mkdir(join(hostsDir, proxy.host), { recursive: true });
  await writeFile(join(hostsDir, proxy.host, 'hosts.toml'), `server = "${proxy.url}"\n\n[host."${serve.url}"]\n  capabilities = ["pull", "resolve"]\n`);
  proxy.reset();
  const ref = `${proxy.host}/tools/busybox:v1`;
  const pull = await ctrd.ctr(['images', 'pull', '--hosts-dir', hostsDir, ref], { timeoutMs: 180_000 });
  assert.equal(pull.code, 0, `ctr pull through the mirror failed: ${pull.stderr}`);
  const ran = await ctrd.ctr(['run', '--rm', ref, `ts-mirror-${process.pid}`, 'echo', 'hello through the mirror'], { timeoutMs: 120_000 });
  assert.equal(ran.code, 0, ran.stderr);
  assert.match(ran.stdout, /hello through the mirror/);
  // Every upstream request came from the mirror (containerd never went to the server directly): one manifest GET.
  assert.equal(proxy.count('GET', /\/tools\/busybox\/manifests\/v1$/), 1);

  // A moved tag is picked up after the TTL (waiting for time to pass is what a TTL is about).
  await seed(`oci:${await busyboxLayout(join(work, 'bb2'), { path: 'version', content: 'two' })}:v1`, 'tools/busybox:v1');
  const moved = await skopeo(['inspect', '--tls-verify=false', '--raw', `docker://${dist.host}/tools/busybox:v1`]);
  await sleep(TTL_SECONDS * 1000 + 200);
  const bb2 = join(work, 'out-bb2');
  const copied = await skopeo(['copy', '--src-tls-verify=false', `docker://${serve.host}/upstream/tools/busybox:v1`, `oci:${bb2}:v1`]);
  assert.equal(copied.code, 0, copied.stderr);
  const viaMirror = await skopeo(['inspect', '--raw', `oci:${bb2}:v1`]);
  assert.equal(viaMirror.stdout, moved.stdout, 'the mirror serves the moved tag after the TTL');

  // Upstream stopped: the cached tag still pulls (stale) and runs, in a containerd namespace that never pulled it.
  await proxy.stop();
  await dist.stop();
  await sleep(TTL_SECONDS * 1000 + 200);
  const stalePull = await ctrd.ctr(['images', 'pull', '--hosts-dir', hostsDir, ref], { namespace: 'stale', timeoutMs: 180_000 });
  assert.equal(stalePull.code, 0, `pull with the upstream down failed: ${stalePull.stderr}`);
  const staleRun = await ctrd.ctr(['run', '--rm', ref, `ts-mirror-stale-${process.pid}`, 'cat', '/version'], { namespace: 'stale', timeoutMs: 120_000 });
  assert.equal(staleRun.code, 0, staleRun.stderr);
  assert.match(staleRun.stdout, /two/);
  const metrics = await (await fetch(`${serve.url}/metrics`)).text();
  assert.match(metrics, /mirror_requests_total\{kind="manifest",result="stale"\} [1-9]/);
  assert.match(metrics, /mirror_coalesced_waiters_total\{kind="blob"\} [1-9]/);
});
