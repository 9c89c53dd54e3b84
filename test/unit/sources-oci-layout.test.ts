// oci: layouts as source and destination: ref resolution, verified reads, atomic writes, hostile layouts, and
// skopeo reading what we wrote.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile, mkdir, chmod, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openOciLayoutSource, OciLayoutDestination } from '../../src/transfer/sources/oci-layout.js';
import { openDestination, openSource } from '../../src/transfer/sources/index.js';
import { digestOf } from '../../src/core/digest.js';
import type { Descriptor } from '../../src/transfer/types.js';
import { buffer as drain } from 'node:stream/consumers';
import { copyImageForTest, ensureSkopeo, makeOciLayout, runSkopeo } from '../support/images.js';

let work: string;
before(async () => {
  work = await mkdtemp(join(tmpdir(), 'ts-oci-layout-'));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});


function blobFile(dir: string, d: Descriptor): string {
  return join(dir, 'blobs', 'sha256', d.digest.slice(7));
}

void test('source serves the tagged manifest and verified blobs, byte-identical', async () => {
  const dir = join(work, 'basic');
  const img = await makeOciLayout(dir, { tag: 'v1', layers: 3, seed: 1 });
  const src = await openOciLayoutSource(dir, { tag: 'v1' });
  const root = await src.root();
  assert.equal(root.descriptor.digest, img.manifestDigest);
  assert.deepEqual(root.bytes, img.root.bytes);
  for (const b of img.blobs) assert.deepEqual(await drain(await src.blob(b)), await readFile(blobFile(dir, b)));
  await src.close();
});

void test('images are deterministic from the seed and share layers given by seed', async () => {
  const a = await makeOciLayout(join(work, 'det-a'), { seed: 'x', layers: 2 });
  const b = await makeOciLayout(join(work, 'det-b'), { seed: 'x', layers: 2 });
  assert.equal(a.manifestDigest, b.manifestDigest);
  const shared = await makeOciLayout(join(work, 'det-c'), { seed: 'y', layers: [{ seed: 'x/layer/0' }, { seed: 'x/layer/1' }, { seed: 'other' }] });
  assert.deepEqual(shared.layers.slice(0, 2).map((l) => l.digest), a.layers.map((l) => l.digest));
  assert.notEqual(shared.layers[2]?.digest, a.layers[0]?.digest);
});

void test('no ref: the only manifest is taken; several manifests need a tag; unknown tags are TS_TAG_UNKNOWN', async () => {
  const dir = join(work, 'refs');
  const one = await makeOciLayout(dir, { tag: 'one', seed: 'one' });
  assert.equal((await (await openOciLayoutSource(dir)).root()).descriptor.digest, one.manifestDigest);
  const two = await makeOciLayout(dir, { tag: 'two', seed: 'two' });
  await assert.rejects(openOciLayoutSource(dir), { code: 'TS_INVALID_REFERENCE' });
  assert.equal((await (await openOciLayoutSource(dir, { tag: 'two' })).root()).descriptor.digest, two.manifestDigest);
  assert.equal((await (await openOciLayoutSource(dir, { digest: one.manifestDigest })).root()).descriptor.digest, one.manifestDigest);
  await assert.rejects(openOciLayoutSource(dir, { tag: 'three' }), { code: 'TS_TAG_UNKNOWN' });
  await assert.rejects(openOciLayoutSource(dir, { digest: digestOf('nope') }), { code: 'TS_TAG_UNKNOWN' });
});

void test('multi-arch: the root is an index; children resolve by digest, also as a digest ref', async () => {
  const dir = join(work, 'multi');
  const img = await makeOciLayout(dir, { multiArch: true, layers: 2 });
  assert.equal(img.manifests.length, 2);
  const src = await openOciLayoutSource(dir, { tag: 'latest' });
  const root = await src.root();
  assert.equal(root.descriptor.mediaType, 'application/vnd.oci.image.index.v1+json');
  const child = img.manifests[1]?.descriptor as Descriptor;
  assert.deepEqual((await src.manifest(child)).bytes, img.manifests[1]?.bytes);
  const direct = await openOciLayoutSource(dir, { digest: child.digest });
  assert.equal((await direct.root()).descriptor.mediaType, 'application/vnd.oci.image.manifest.v1+json');
});

void test('copy to a destination writes the same blobs and replaces an older entry with the same tag', async () => {
  const srcDir = join(work, 'copy-src');
  const dstDir = join(work, 'copy-dst');
  const img = await makeOciLayout(srcDir, { tag: 'a', multiArch: true });
  const dst = await OciLayoutDestination.open(dstDir, { tag: 'x' });
  const written = await copyImageForTest(await openOciLayoutSource(srcDir, { tag: 'a' }), dst);
  assert.equal(written.length, img.blobs.length);
  for (const b of img.blobs) assert.deepEqual(await readFile(blobFile(dstDir, b)), await readFile(blobFile(srcDir, b)));
  // Again: everything is present; the tag entry is replaced, not duplicated.
  const again = await copyImageForTest(await openOciLayoutSource(srcDir, { tag: 'a' }), await OciLayoutDestination.open(dstDir, { tag: 'x' }));
  assert.equal(again.length, 0);
  const other = await makeOciLayout(srcDir, { tag: 'b', seed: 'b' });
  await copyImageForTest(await openOciLayoutSource(srcDir, { tag: 'b' }), await OciLayoutDestination.open(dstDir, { tag: 'x' }));
  const index = JSON.parse(await readFile(join(dstDir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  assert.equal(index.manifests.length, 1);
  assert.equal(index.manifests[0]?.digest, other.manifestDigest);
  assert.equal(await readFile(join(dstDir, 'oci-layout'), 'utf8'), '{"imageLayoutVersion":"1.0.0"}');
  const present = await dst.present([...img.blobs, { mediaType: 'x', digest: digestOf('absent'), size: 6 }]);
  assert.equal(present.size, img.blobs.length);
});

void test('destination: wrong bytes are rejected with TS_DIGEST_MISMATCH and nothing becomes visible', async () => {
  const dir = join(work, 'dst-bad');
  const dst = await OciLayoutDestination.open(dir, { tag: 't' });
  const desc: Descriptor = { mediaType: 'application/octet-stream', digest: digestOf('good'), size: 4 };
  await assert.rejects(dst.putBlob(desc, async () => Readable.from([Buffer.from('evil')])), { code: 'TS_DIGEST_MISMATCH' });
  await assert.rejects(dst.putBlob(desc, async () => Readable.from([Buffer.from('goodbye')])), { code: 'TS_SIZE_MISMATCH' });
  assert.deepEqual(await readdir(join(dir, 'blobs', 'sha256')), []);
  assert.deepEqual((await dst.putBlob(desc, async () => Readable.from([Buffer.from('good')]))).status, 'written');
  assert.deepEqual((await dst.putBlob(desc, async () => Readable.from([Buffer.from('good')]))).status, 'exists');
});

void test('destination: digests that fail parseDigest never name a path', async () => {
  const dir = join(work, 'dst-hostile');
  const dst = await OciLayoutDestination.open(dir, { tag: 't' });
  for (const digest of ['sha256:../../../etc/passwd', 'sha256/../../x', `SHA256:${'a'.repeat(64)}`, '']) {
    await assert.rejects(dst.putBlob({ mediaType: 'x', digest, size: 1 }, async () => Readable.from([Buffer.from('x')])), { code: 'TS_INVALID_DIGEST' });
  }
  await assert.rejects(dst.putBlob({ mediaType: 'x', digest: `md5:${'a'.repeat(32)}`, size: 1 }, async () => Readable.from([])), { code: 'TS_UNSUPPORTED_ALGORITHM' });
  await assert.rejects(OciLayoutDestination.open(dir, { digest: digestOf('x') }), { code: 'TS_INVALID_REFERENCE' });
});

void test('destination: cancelling mid-blob stops at once and leaves no temp file', async () => {
  const dir = join(work, 'dst-cancel');
  const dst = await OciLayoutDestination.open(dir, { tag: 't' });
  const ac = new AbortController();
  // Cancelled when the pipeline asks for the second chunk: mid-blob, at the same point on every run (a timer here
  // made the test depend on how busy the machine was).
  let sent = false;
  const endless = new Readable({
    read() {
      if (sent) ac.abort();
      else this.push(Buffer.alloc(1024));
      sent = true;
    },
  });
  await assert.rejects(dst.putBlob({ mediaType: 'x', digest: digestOf('x'), size: 1 << 30 }, async () => endless, { signal: ac.signal }), { code: 'TS_CANCELLED' });
  assert.deepEqual(await readdir(join(dir, 'blobs', 'sha256')), []);
  assert.equal(endless.destroyed, true);
});

void test('destination: a cancel between opening the source and the pipeline leaves no temp file (regression: the write stream created it after the cleanup ran)', async () => {
  const dir = join(work, 'dst-cancel-open');
  const dst = await OciLayoutDestination.open(dir, { tag: 't' });
  const ac = new AbortController();
  const source = Readable.from([Buffer.from('x')]);
  const open = async (): Promise<Readable> => {
    ac.abort(); // the cancel lands after the source is open and before a byte moves
    return source;
  };
  await assert.rejects(dst.putBlob({ mediaType: 'x', digest: digestOf('x'), size: 1 }, open, { signal: ac.signal }), { code: 'TS_CANCELLED' });
  assert.deepEqual(await readdir(join(dir, 'blobs', 'sha256')), [], 'no .tmp-* file, and no blob');
  assert.equal(source.destroyed, true, 'the opened source is closed');
  // An open that fails after the temp file exists leaves nothing either.
  await assert.rejects(dst.putBlob({ mediaType: 'x', digest: digestOf('x'), size: 1 }, async () => {
    throw Object.assign(new Error('no such blob upstream'), { code: 'ENOENT' });
  }));
  assert.deepEqual(await readdir(join(dir, 'blobs', 'sha256')), []);
});

void test('hostile layouts fail with stable codes', async (t) => {
  const base = join(work, 'hostile');
  const fresh = async (name: string): Promise<{ dir: string; img: Awaited<ReturnType<typeof makeOciLayout>> }> => {
    const dir = join(base, name);
    return { dir, img: await makeOciLayout(dir, { seed: name }) };
  };
  await t.test('nonexistent directory: TS_NOT_FOUND', async () => {
    await assert.rejects(openOciLayoutSource(join(base, 'nope')), { code: 'TS_NOT_FOUND' });
  });
  await t.test('a file instead of a directory: TS_LAYOUT_INVALID', async () => {
    await mkdir(base, { recursive: true });
    await writeFile(join(base, 'file'), 'x');
    await assert.rejects(openOciLayoutSource(join(base, 'file')), { code: 'TS_LAYOUT_INVALID' });
  });
  await t.test('missing index.json / oci-layout: TS_LAYOUT_INVALID', async () => {
    const a = await fresh('noindex');
    await rm(join(a.dir, 'index.json'));
    await assert.rejects(openOciLayoutSource(a.dir), { code: 'TS_LAYOUT_INVALID' });
    const b = await fresh('nomarker');
    await rm(join(b.dir, 'oci-layout'));
    await assert.rejects(openOciLayoutSource(b.dir), { code: 'TS_LAYOUT_INVALID' });
  });
  await t.test('malformed JSON and malformed descriptors: TS_LAYOUT_INVALID', async () => {
    const a = await fresh('badjson');
    await writeFile(join(a.dir, 'index.json'), '{"schemaVersion":2,"manifests":[');
    await assert.rejects(openOciLayoutSource(a.dir), { code: 'TS_LAYOUT_INVALID' });
    for (const digest of ['sha256:../../../../etc/passwd', 'sha256:abc', 42]) {
      await writeFile(join(a.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'x', digest, size: 1 }] }));
      await assert.rejects(openOciLayoutSource(a.dir), { code: 'TS_LAYOUT_INVALID' });
    }
    await writeFile(join(a.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'x', digest: digestOf('x'), size: -1 }] }));
    await assert.rejects(openOciLayoutSource(a.dir), { code: 'TS_LAYOUT_INVALID' });
  });
  await t.test('index referencing a missing blob: TS_BLOB_UNKNOWN', async () => {
    const a = await fresh('missingblob');
    await rm(join(a.dir, 'blobs', 'sha256', a.img.manifestDigest.slice(7)));
    const src = await openOciLayoutSource(a.dir);
    await assert.rejects(src.root(), { code: 'TS_BLOB_UNKNOWN' });
  });
  await t.test('a layer whose bytes do not match its digest: TS_DIGEST_MISMATCH when read', async () => {
    const a = await fresh('corrupt');
    const layer = a.img.layers[0] as Descriptor;
    const bytes = await readFile(blobFile(a.dir, layer));
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0xff;
    await writeFile(blobFile(a.dir, layer), bytes);
    const src = await openOciLayoutSource(a.dir);
    await assert.rejects(drain(await src.blob(layer)), { code: 'TS_DIGEST_MISMATCH' });
    await truncate(blobFile(a.dir, layer), 10);
    await assert.rejects(drain(await src.blob(layer)), { code: 'TS_SIZE_MISMATCH' });
  });
  await t.test('a manifest whose bytes do not match: TS_DIGEST_MISMATCH; not JSON: TS_MANIFEST_INVALID', async () => {
    const a = await fresh('badmanifest');
    const path = join(a.dir, 'blobs', 'sha256', a.img.manifestDigest.slice(7));
    const good = await readFile(path);
    await writeFile(path, Buffer.from(good.toString('utf8').replace('schemaVersion', 'schemaVersioN')));
    await assert.rejects((await openOciLayoutSource(a.dir)).root(), { code: 'TS_DIGEST_MISMATCH' });
    // A layout whose index points at a "manifest" that is a layer: right digest, wrong content.
    const layer = a.img.layers[0] as Descriptor;
    await writeFile(join(a.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ ...layer, mediaType: 'application/vnd.oci.image.manifest.v1+json' }] }));
    await assert.rejects((await openOciLayoutSource(a.dir)).root(), { code: 'TS_MANIFEST_INVALID' });
  });
  await t.test('unreadable index.json: TS_PERMISSION_DENIED', async () => {
    const a = await fresh('unreadable');
    await chmod(join(a.dir, 'index.json'), 0o000);
    if (process.getuid?.() !== 0) {
      await assert.rejects(openOciLayoutSource(a.dir), { code: 'TS_PERMISSION_DENIED' });
      return;
    }
    // root reads any file whatever its mode: ask the same question as an unprivileged user in a child process.
    for (const d of [work, base, a.dir]) await chmod(d, 0o755);
    const module = fileURLToPath(new URL('../../src/transfer/sources/oci-layout.ts', import.meta.url));
    const script = `import(${JSON.stringify(module)}).then((m) => m.openOciLayoutSource(${JSON.stringify(a.dir)})).then(() => console.log('opened'), (e) => console.log(e.code))`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { uid: 65534, gid: 65534, encoding: 'utf8', cwd: fileURLToPath(new URL('../..', import.meta.url)) });
    assert.equal(r.stdout.trim(), 'TS_PERMISSION_DENIED', r.stderr);
  });
});

void test('source: a cancelled signal fails the blob stream with TS_CANCELLED', async () => {
  const dir = join(work, 'src-cancel');
  const img = await makeOciLayout(dir, { layerSize: 4 << 20, layers: 1, gzip: false });
  const src = await openOciLayoutSource(dir);
  const ac = new AbortController();
  const stream = await src.blob(img.layers[0] as Descriptor, { signal: ac.signal });
  ac.abort();
  await assert.rejects(drain(stream), (err: Error) => err.name === 'AbortError' || (err as { code?: string }).code === 'TS_CANCELLED');
  await assert.rejects(src.root({ signal: ac.signal }), { code: 'TS_CANCELLED' });
});

const skopeo = ensureSkopeo();
void test('skopeo reads a layout our destination wrote (inspect, copy)', { skip: skopeo ? false : 'skopeo is not installed and cannot be installed' }, async () => {
  const srcDir = join(work, 'sk-src');
  const ours = join(work, 'sk-ours');
  const theirs = join(work, 'sk-theirs');
  const img = await makeOciLayout(srcDir, { tag: 'orig', layers: 2, multiArch: true });
  await copyImageForTest(await openOciLayoutSource(srcDir, { tag: 'orig' }), await OciLayoutDestination.open(ours, { tag: 't' }));
  const inspect = runSkopeo(['inspect', '--raw', `oci:${ours}:t`], work);
  assert.equal(inspect.status, 0, inspect.stderr);
  assert.equal(digestOf(inspect.stdout), img.manifestDigest);
  const copy = runSkopeo(['copy', '--all', '--preserve-digests', `oci:${ours}:t`, `oci:${theirs}:t`], work);
  assert.equal(copy.status, 0, copy.stderr);
  // And back: what skopeo wrote is readable by our source, same digests.
  const back = await openOciLayoutSource(theirs, { tag: 't' });
  assert.equal((await back.root()).descriptor.digest, img.manifestDigest);
  for (const b of img.blobs) assert.equal(digestOf(await drain(await back.blob(b))), b.digest);
});

void test('openSource / openDestination dispatch by reference; read-only transports refuse to be written', async () => {
  const dir = join(work, 'dispatch');
  const img = await makeOciLayout(dir, { tag: 'd' });
  const src = await openSource(`oci:${dir}:d`);
  assert.equal((await src.root()).descriptor.digest, img.manifestDigest);
  const dst = await openDestination(`oci:${join(work, 'dispatch-out')}:e`);
  await copyImageForTest(src, dst);
  assert.equal((await (await openSource(`oci:${join(work, 'dispatch-out')}:e`)).root()).descriptor.digest, img.manifestDigest);
  await assert.rejects(openDestination('docker-archive:/tmp/x.tar'), { code: 'TS_USAGE' });
  await assert.rejects(openDestination('docker://localhost:5000/x:y'), { code: 'TS_USAGE' });
  await assert.rejects(openSource('dir:/tmp/store/x:y'), { code: 'TS_INVALID_REFERENCE' });
});
