// containerd pulls from transship (`ctr images pull --plain-http`) and runs a container from the pulled image: a
// busybox-static rootfs pushed with skopeo into a transship registry on the fs store. Uses the private containerd
// of test/support/containerd.ts (own root, state, socket and namespace).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startContainerd, type TestContainerd } from '../support/containerd.js';
import { busyboxLayout } from '../support/busybox.js';
import { skopeo, startTestRegistry, tempFsStore } from '../support/registry.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

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
