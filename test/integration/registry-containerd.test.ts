// containerd pulls from transship (`ctr images pull --plain-http`) and runs a container from the pulled image: a
// busybox-static rootfs pushed with skopeo into a transship registry on the fs store. Uses the private containerd
// of test/support/containerd.ts (own root, state, socket and namespace).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startContainerd, type TestContainerd } from '../support/containerd.js';
import { run, skopeo, startTestRegistry, tempFsStore } from '../support/registry.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** An OCI layout with one uncompressed layer holding /bin/busybox and a few applets. */
async function busyboxLayout(dir: string): Promise<string> {
  const rootfs = join(dir, 'rootfs');
  await mkdir(join(rootfs, 'bin'), { recursive: true });
  await copyFile('/bin/busybox', join(rootfs, 'bin', 'busybox'));
  for (const applet of ['sh', 'echo', 'cat']) await symlink('busybox', join(rootfs, 'bin', applet));
  const layerTar = join(dir, 'layer.tar');
  const t = await run('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', layerTar, '.']);
  assert.equal(t.code, 0, t.stderr);
  const layer = await readFile(layerTar);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/bin'], Cmd: ['sh'] }, rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layer)}`] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha(config)}`, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${sha(layer)}`, size: layer.length }],
    }),
  );
  const layout = join(dir, 'layout');
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  for (const b of [layer, config, manifest]) await writeFile(join(layout, 'blobs', 'sha256', sha(b)), b);
  await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(
    join(layout, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha(manifest)}`, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] }),
  );
  return layout;
}

test('containerd pulls an image from transship with ctr --plain-http and runs a container from it', { skip: process.getuid?.() !== 0 ? 'needs root for containerd' : false }, async () => {
  const work = await mkdtemp(join(tmpdir(), 'ts-ctr-reg-'));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  const fs = await tempFsStore();
  cleanups.push(fs.cleanup);
  const reg = await startTestRegistry({ store: fs.store, meta: fs.meta });
  cleanups.push(() => reg.close());
  const layout = await busyboxLayout(work);
  const pushed = await skopeo(['copy', '--dest-tls-verify=false', `oci:${layout}:v1`, `docker://${reg.host}/tools/busybox:v1`]);
  assert.equal(pushed.code, 0, pushed.stderr);

  const ctrd: TestContainerd = await startContainerd();
  cleanups.push(() => ctrd.stop());
  const ref = `${reg.host}/tools/busybox:v1`;
  const pull = await ctrd.ctr(['images', 'pull', '--plain-http', ref], { timeoutMs: 120_000 });
  assert.equal(pull.code, 0, `ctr pull failed: ${pull.stderr}`);
  const out = await ctrd.ctr(['run', '--rm', ref, `ts-reg-${process.pid}`, 'echo', 'hello from transship'], { timeoutMs: 120_000 });
  assert.equal(out.code, 0, `ctr run failed: ${out.stderr}`);
  assert.match(out.stdout, /hello from transship/);
});
