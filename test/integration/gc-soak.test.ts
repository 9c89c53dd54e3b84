// Soak (issue 15, "How it is shown"): two `serve` processes on one bucket, each running its own GC passes every few
// seconds with a short test grace (one at a time, by the lease), while two workers push, re-push, cross-mount and
// delete images through skopeo and the registry API, on both instances. Afterwards every image still tagged pulls
// byte-identical, `verify` is clean, and once the grace has passed a last pass leaves no unreachable blob behind.
// Length: TRANSSHIP_GC_SOAK_SECONDS (default 120).
import { mulberry32 } from '../support/s3-proxy.js';
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTestBucket, s3TestConfig } from '../support/rgw.js';
import { layoutBlobs, skopeo, spawnServe, type ServeProcess } from '../support/registry.js';
import { makeOciLayout, type BuiltImage } from '../support/images.js';
import { S3Store } from '../../packages/transship/src/store/s3-store.js';
import { loadConfig } from '../../packages/transship/src/config/config.js';
import { gcSettings } from '../../packages/transship/src/gc/settings.js';
import { runPass } from '../../packages/transship/src/gc/pass.js';
import { verifyStore } from '../../packages/transship/src/transfer/store-verify.js';
import { parseManifest, references } from '../../packages/transship/src/transfer/manifest.js';
import { GC_REPORT_PREFIX } from '../../packages/transship/src/store/keys.js';

const cfg = s3TestConfig();
if (!cfg) throw new Error('TRANSSHIP_TEST_S3_* not set: run through `npm test`');
const SOAK_MS = Number(process.env.TRANSSHIP_GC_SOAK_SECONDS ?? 120) * 1000;
const tmp = await mkdtemp(join(tmpdir(), 'ts-gc-soak-'));
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await rm(tmp, { recursive: true, force: true });
});

test(`gc soak: two serve instances, pushes, re-pushes, mounts and deletes while GC loops for ${SOAK_MS / 1000} s`, { timeout: SOAK_MS + 600_000 }, async () => {
  const bucket = await createTestBucket('gc-soak');
  const config = join(tmp, 'soak.yaml');
  // The shortest safe test timings (the configuration rule holds: 31 > 1 + 1 + 10 + 0 + 2), passes every 4 s.
  await writeFile(config, 'cache:\n  ttlSeconds: 5\nserve:\n  allowDelete: true\ngc:\n  graceSeconds: 31\n  refreshAfterSeconds: 1\n  horizonSeconds: 1\n  maxPassSeconds: 10\n  clockSkewSeconds: 0\n  settleSeconds: 2\n  intervalSeconds: 4\n  leaseSeconds: 10\n');
  const env = { ...process.env, AWS_ENDPOINT_URL_S3: cfg.endpoint, AWS_ACCESS_KEY_ID: cfg.accessKeyId, AWS_SECRET_ACCESS_KEY: cfg.secretAccessKey, AWS_REGION: cfg.region, TRANSSHIP_CONFIG: config };
  const serves: ServeProcess[] = [];
  for (let i = 0; i < 2; i++) {
    const s = await spawnServe(['--store', `s3://${bucket}`], env);
    cleanups.push(() => s.stop());
    serves.push(s);
  }
  // Images sharing a base layer (dedup across images and repositories).
  // (Generated tar layers: skopeo round-trips those byte for byte; the same seed gives the same base layer.)
  const images: BuiltImage[] = [];
  for (let i = 0; i < 5; i++) images.push(await makeOciLayout(join(tmp, `img${i}`), { tag: 'v', layers: [{ seed: 'soak-base', size: 4096 }, { seed: `soak-unique-${i}`, size: 2048 + i }], seed: `soak-${i}` }));
  const repos = ['a/app', 'b/app', 'c/tool'];
  /** What must be pullable at the end: repo:tag → image index. */
  const expected = new Map<string, number>();
  const stats = { push: 0, mount: 0, deleteTag: 0, deleteManifest: 0, failedRetried: 0 };
  const locks = new Set<string>();
  const history: string[] = [];
  const t0 = Date.now();

  const worker = async (seed: number): Promise<void> => {
    const rnd = mulberry32(seed);
    const end = Date.now() + SOAK_MS;
    while (Date.now() < end) {
      const serve = serves[Math.floor(rnd() * serves.length)]!;
      const repo = repos[Math.floor(rnd() * repos.length)]!;
      const tag = `t${Math.floor(rnd() * 3)}`;
      const key = `${repo}:${tag}`;
      // One operation per repository at a time: a delete by digest removes every tag of the repository that points
      // at the manifest, so the model below stays exact.
      if (locks.has(repo)) {
        await sleep(5);
        continue;
      }
      locks.add(repo);
      const started = Date.now();
      const note = (what: string) => history.push(`${((started - t0) / 1000).toFixed(1)}-${((Date.now() - t0) / 1000).toFixed(1)} s ${serve.host} ${what}`);
      try {
        const op = rnd();
        const i = Math.floor(rnd() * images.length);
        if (op < 0.55) {
          // Push (or re-push) — skopeo HEADs every blob and uploads only what is missing.
          const r = await skopeo(['copy', '--dest-tls-verify=false', `oci:${images[i]!.path}:v`, `docker://${serve.host}/${key}`]);
          if (r.code !== 0) {
            // A blob removed by GC between HEAD and manifest PUT is refused (MANIFEST_BLOB_UNKNOWN): push again.
            stats.failedRetried++;
            const again = await skopeo(['copy', '--dest-tls-verify=false', `oci:${images[i]!.path}:v`, `docker://${serve.host}/${key}`]);
            assert.equal(again.code, 0, `push ${key} failed twice:\n${r.stderr}\n${again.stderr}`);
          }
          expected.set(key, i);
          note(`push ${key} = img${i}`);
          stats.push++;
        } else if (op < 0.7) {
          // Cross-repository mount of every blob of an image still tagged elsewhere, then push its manifest here.
          const source = [...expected.entries()].find(([k, v]) => v === i && !k.startsWith(`${repo}:`));
          if (!source) continue;
          const from = source[0].split(':')[0]!;
          for (const d of (await layoutBlobs(images[i]!.path)).keys()) {
            const res = await fetch(`${serve.url}/v2/${repo}/blobs/uploads/?mount=${d}&from=${from}`, { method: 'POST' });
            await res.arrayBuffer();
          }
          const r = await skopeo(['copy', '--dest-tls-verify=false', `oci:${images[i]!.path}:v`, `docker://${serve.host}/${key}`]);
          if (r.code !== 0) {
            stats.failedRetried++;
            const again = await skopeo(['copy', '--dest-tls-verify=false', `oci:${images[i]!.path}:v`, `docker://${serve.host}/${key}`]);
            assert.equal(again.code, 0, `mount+push ${key} failed twice:\n${again.stderr}`);
          }
          expected.set(key, i);
          note(`mount+push ${key} = img${i}`);
          stats.mount++;
        } else if (op < 0.85) {
          const res = await fetch(`${serve.url}/v2/${repo}/manifests/${tag}`, { method: 'DELETE' });
          await res.arrayBuffer();
          if (res.status === 202) {
            expected.delete(key);
            note(`delete tag ${key}`);
            stats.deleteTag++;
          }
        } else {
          // Delete by digest: every tag of this repository pointing at it goes too.
          const digest = images[i]!.manifestDigest;
          const res = await fetch(`${serve.url}/v2/${repo}/manifests/${digest}`, { method: 'DELETE' });
          await res.arrayBuffer();
          if (res.status === 202) {
            for (const [k, v] of [...expected]) if (k.startsWith(`${repo}:`) && v === i) expected.delete(k);
            note(`delete manifest img${i} in ${repo}`);
            stats.deleteManifest++;
          }
        }
      } finally {
        locks.delete(repo);
      }
    }
  };
  await Promise.all([worker(1), worker(2)]);
  assert.ok(stats.push > 5, `the soak did work: ${JSON.stringify(stats)}`);

  // Every image still tagged pulls byte-identical, from either instance.
  for (const [key, i] of expected) {
    const out = join(tmp, `pull-${key.replace(/[/:]/g, '_')}`);
    const r = await skopeo(['copy', '--src-tls-verify=false', `docker://${serves[0]!.host}/${key}`, `oci:${out}:v`]);
    assert.equal(r.code, 0, `pull ${key}:\n${r.stderr}`);
    const pulled = await layoutBlobs(out);
    assert.deepEqual([...pulled.keys()].sort(), [...(await layoutBlobs(images[i]!.path)).keys()].sort(), `${key} is not img${i}; manifests: ${images.map((m, n) => `img${n}=${m.manifestDigest.slice(7, 19)}`).join(' ')}\n${history.filter((h) => h.includes(key.split(':')[0]!)).join('\n')}`);
    for (const [d, h] of pulled) assert.equal(`sha256:${h}`, d);
  }
  for (const s of serves) await s.stop();

  const store = new S3Store({ bucket, prefix: '', endpoint: cfg.endpoint, s3Region: cfg.region, accessKeyId: cfg.accessKeyId, secretAccessKey: cfg.secretAccessKey });
  cleanups.push(() => store.close());
  assert.deepEqual((await verifyStore(store)).problems, [], 'verify is clean');
  // The instances' own passes ran (one at a time, by the lease) and left their reports.
  let passes = 0;
  for await (const o of store.objects.list(GC_REPORT_PREFIX)) if (o.key.endsWith('.json')) passes++;
  assert.ok(passes >= 3, `serve ran gc passes during the soak (${passes})`);

  // Once the grace has passed (ageing, not synchronisation), one more pass: nothing unreachable is left.
  await sleep(32_000);
  const settings = gcSettings(loadConfig({ file: config, env: {} }));
  const last = await runPass(store, settings);
  assert.equal(last.result, 'success', JSON.stringify(last.stopped));
  const reachable = new Set<string>();
  for (const repo of await store.listRepos()) {
    for (const m of await store.listManifestLinks(repo)) {
      reachable.add(m);
      for (const r of references(parseManifest(await buffer(await store.getBlob(m))))) reachable.add(r.digest);
    }
  }
  const stored: string[] = [];
  for await (const b of store.listBlobs()) stored.push(b.digest);
  assert.deepEqual(stored.filter((d) => !reachable.has(d)), [], 'every unreachable blob is gone after the grace');
  assert.deepEqual((await verifyStore(store)).problems, []);
  process.stdout.write(`# soak: ${JSON.stringify(stats)}; ${stored.length} blobs left, ${expected.size} tags\n`);
});
