// oci-archive: and docker-archive: — tar indexing, verified range reads, synthesized docker manifests, and the
// hostile archives that must be refused with stable codes (truncation, bad headers, escaping names and links).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, stat } from 'node:fs/promises';
import { createReadStream, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { digestOf } from '@transship/core/digest';
import { openOciArchiveSource, OciArchiveDestination } from '../../packages/transship/src/transfer/sources/oci-archive.js';
import { DockerArchiveSource } from '../../packages/transship/src/transfer/sources/docker-archive.js';
import { openOciLayoutSource } from '../../packages/transship/src/transfer/sources/oci-layout.js';
import { TarIndex } from '../../packages/transship/src/transfer/sources/tar-index.js';
import type { Descriptor } from '../../packages/transship/src/transfer/types.js';
import { buffer as drain } from 'node:stream/consumers';
import { copyImageForTest, ensureSkopeo, makeDockerArchive, makeOciArchive, makeOciLayout, runSkopeo, writeTar } from '../support/images.js';

let work: string;
before(async () => {
  work = await mkdtemp(join(tmpdir(), 'ts-archives-'));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});


const skopeo = ensureSkopeo();

void test('oci-archive source serves manifests and verified blobs from byte ranges', async () => {
  const file = join(work, 'img.tar');
  const img = await makeOciArchive(file, { tag: 'v1', layers: 3, multiArch: true });
  const src = await openOciArchiveSource(file, { tag: 'v1' });
  const root = await src.root();
  assert.equal(root.descriptor.digest, img.manifestDigest);
  for (const m of img.manifests) assert.deepEqual((await src.manifest(m.descriptor)).bytes, m.bytes);
  for (const b of img.blobs) assert.equal(digestOf(await drain(await src.blob(b))), b.digest);
  await src.close();
  await assert.rejects(openOciArchiveSource(file, { tag: 'nope' }), { code: 'TS_TAG_UNKNOWN' });
});

void test('a gzip-compressed archive is decompressed to a private temp file and read the same', async () => {
  const file = join(work, 'plain.tar');
  const img = await makeOciArchive(file, { seed: 'gz' });
  await pipeline(createReadStream(file), createGzip(), createWriteStream(`${file}.gz`));
  const src = await openOciArchiveSource(`${file}.gz`);
  assert.equal((await src.root()).descriptor.digest, img.manifestDigest);
  await src.close();
  await writeFile(join(work, 'bad.gz'), Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(40, 7)]));
  await assert.rejects(TarIndex.open(join(work, 'bad.gz')), { code: 'TS_ARCHIVE_INVALID' });
});

void test('oci-archive destination writes a tar at commit only; the archive reads back (and with skopeo)', async () => {
  const layout = join(work, 'dst-src');
  const img = await makeOciLayout(layout, { tag: 'a', layers: 2 });
  const out = join(work, 'out.tar');
  const dst = await OciArchiveDestination.open(out, { tag: 'b' });
  await copyImageForTest(await openOciLayoutSource(layout), dst);
  await dst.close();
  const back = await openOciArchiveSource(out, { tag: 'b' });
  assert.equal((await back.root()).descriptor.digest, img.manifestDigest);
  for (const b of img.blobs) assert.equal(digestOf(await drain(await back.blob(b))), b.digest);
  if (skopeo) {
    const r = runSkopeo(['inspect', '--raw', `oci-archive:${out}:b`], work);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(digestOf(r.stdout), img.manifestDigest);
  }
  // An uncommitted destination leaves neither archive nor temp directory.
  const never = join(work, 'never.tar');
  const dst2 = await OciArchiveDestination.open(never, { tag: 'b' });
  await dst2.close();
  await assert.rejects(stat(never), { code: 'ENOENT' });
});

void test('docker-archive (legacy layout): synthesized schema 2 manifest with real digests and sizes', async () => {
  const file = join(work, 'docker.tar');
  const built = await makeDockerArchive(file, { layers: 2, repoTags: ['example/app:1'] });
  const image = built.images[0];
  assert.ok(image);
  const src = await DockerArchiveSource.open(file);
  const root = await src.root();
  assert.deepEqual(root.bytes, image.manifest.bytes);
  const doc = JSON.parse(root.bytes.toString('utf8')) as { config: Descriptor; layers: Descriptor[] };
  assert.equal(doc.config.mediaType, 'application/vnd.docker.container.image.v1+json');
  assert.deepEqual(doc.layers.map((l) => l.mediaType), ['application/vnd.docker.image.rootfs.diff.tar', 'application/vnd.docker.image.rootfs.diff.tar']);
  for (const b of [doc.config, ...doc.layers]) assert.equal(digestOf(await drain(await src.blob(b))), b.digest);
  await src.close();
  if (skopeo) {
    // skopeo computes the same config and layer digests from the same archive.
    const r = runSkopeo(['inspect', '--raw', `docker-archive:${file}`], work);
    assert.equal(r.status, 0, r.stderr);
    const theirs = JSON.parse(r.stdout) as { config: Descriptor; layers: Descriptor[] };
    assert.equal(theirs.config.digest, doc.config.digest);
    assert.deepEqual(theirs.layers.map((l) => [l.digest, l.size]), doc.layers.map((l) => [l.digest, l.size]));
  }
});

void test('docker-archive: select by RepoTag (normalized) or @index; gzip layers are typed tar.gzip', async () => {
  const file = join(work, 'multi.tar');
  const built = await makeDockerArchive(file, [
    { seed: 'a', repoTags: ['busybox:1'] },
    { seed: 'b', repoTags: ['docker.io/library/alpine:3'], gzip: true },
  ]);
  await assert.rejects(DockerArchiveSource.open(file), { code: 'TS_INVALID_REFERENCE' });
  const byName = await DockerArchiveSource.open(file, { name: 'docker.io/library/busybox:1' });
  assert.deepEqual((await byName.root()).bytes, built.images[0]?.manifest.bytes);
  const alpine = await DockerArchiveSource.open(file, { name: 'alpine:3' });
  const doc = JSON.parse((await alpine.root()).bytes.toString('utf8')) as { layers: Descriptor[] };
  assert.equal(doc.layers[0]?.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
  const byIndex = await DockerArchiveSource.open(file, { index: 1 });
  assert.deepEqual((await byIndex.root()).bytes, built.images[1]?.manifest.bytes);
  await assert.rejects(DockerArchiveSource.open(file, { index: 2 }), { code: 'TS_TAG_UNKNOWN' });
  await assert.rejects(DockerArchiveSource.open(file, { name: 'busybox:2' }), { code: 'TS_TAG_UNKNOWN' });
});

void test('docker-archive (docker ≥ 25 layout with legacy symlinks): blobs paths are used, links never followed', async () => {
  const file = join(work, 'docker25.tar');
  const built = await makeDockerArchive(file, { seed: 'd25', layers: 2 }, { format: 'oci', symlinks: true });
  const src = await DockerArchiveSource.open(file);
  const root = await src.root();
  assert.deepEqual(root.bytes, built.images[0]?.manifest.bytes);
  const doc = JSON.parse(root.bytes.toString('utf8')) as { layers: Descriptor[] };
  for (const l of doc.layers) assert.equal(digestOf(await drain(await src.blob(l))), l.digest);
  // The same tar is also an OCI archive.
  const asOci = await openOciArchiveSource(file);
  assert.equal((await asOci.root()).descriptor.digest, root.descriptor.digest);
  const index = await TarIndex.open(file);
  const link = [...index.list()].find((e) => e.type === 'symlink');
  assert.ok(link);
  await assert.rejects(index.open(link.name), { code: 'TS_ARCHIVE_UNSAFE_PATH' });
});

void test('hostile archives fail with stable codes', async (t) => {
  const good = join(work, 'good.tar');
  const img = await makeOciArchive(good, { seed: 'hostile', layers: 1 });
  const goodBytes = await readFile(good);
  const layout = [
    { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
    { name: 'index.json', data: JSON.stringify({ schemaVersion: 2, manifests: [img.root.descriptor] }) },
  ];
  const tarWith = async (name: string, entries: Parameters<typeof writeTar>[1]): Promise<string> => {
    const path = join(work, name);
    await writeTar(path, entries);
    return path;
  };

  await t.test('nonexistent file: TS_NOT_FOUND', async () => {
    await assert.rejects(openOciArchiveSource(join(work, 'absent.tar')), { code: 'TS_NOT_FOUND' });
  });
  await t.test('truncated archive: TS_ARCHIVE_INVALID', async () => {
    for (const cut of [100, 512, Math.floor(goodBytes.length / 2), goodBytes.length - 1024]) {
      const path = join(work, `trunc-${cut}.tar`);
      await writeFile(path, goodBytes.subarray(0, cut));
      await assert.rejects(openOciArchiveSource(path), { code: 'TS_ARCHIVE_INVALID' }, `cut at ${cut}`);
    }
  });
  await t.test('malformed header (bad checksum, garbage, bad size): TS_ARCHIVE_INVALID', async () => {
    const flipped = Buffer.from(goodBytes);
    flipped[10] = (flipped[10] ?? 0) ^ 0x20;
    await writeFile(join(work, 'flip.tar'), flipped);
    await assert.rejects(openOciArchiveSource(join(work, 'flip.tar')), { code: 'TS_ARCHIVE_INVALID' });
    await writeFile(join(work, 'garbage.tar'), Buffer.alloc(4096, 0x41));
    await assert.rejects(openOciArchiveSource(join(work, 'garbage.tar')), { code: 'TS_ARCHIVE_INVALID' });
    await writeFile(join(work, 'json.tar'), '{"not":"a tar"}');
    await assert.rejects(openOciArchiveSource(join(work, 'json.tar')), { code: 'TS_ARCHIVE_INVALID' });
  });
  await t.test('entries with "..", absolute paths: TS_ARCHIVE_UNSAFE_PATH', async () => {
    for (const name of ['../evil', 'blobs/../../evil', '/etc/passwd', './../evil']) {
      const path = await tarWith('unsafe.tar', [...layout, { name, data: 'x' }]);
      await assert.rejects(openOciArchiveSource(path), { code: 'TS_ARCHIVE_UNSAFE_PATH' }, name);
    }
  });
  await t.test('links out of the archive: TS_ARCHIVE_UNSAFE_PATH; links inside are never followed', async () => {
    for (const [type, linkname] of [['symlink', '/etc/passwd'], ['symlink', '../../../etc/passwd'], ['link', '../x'], ['link', '/etc/shadow']] as const) {
      const path = await tarWith('links.tar', [...layout, { name: 'blobs/sha256/x', type, linkname }]);
      await assert.rejects(openOciArchiveSource(path), { code: 'TS_ARCHIVE_UNSAFE_PATH' }, `${type} ${linkname}`);
    }
    // index.json as a link to a real file inside: still refused when it is opened, never followed.
    const inside = await tarWith('inside.tar', [{ name: 'real.json', data: layout[1]?.data ?? '' }, layout[0] as { name: string; data: string }, { name: 'index.json', type: 'symlink', linkname: 'real.json' }]);
    await assert.rejects(openOciArchiveSource(inside), { code: 'TS_ARCHIVE_UNSAFE_PATH' });
  });
  await t.test('missing index.json: TS_LAYOUT_INVALID; malformed JSON: TS_LAYOUT_INVALID', async () => {
    await assert.rejects(openOciArchiveSource(await tarWith('noindex.tar', [layout[0] as { name: string; data: string }])), { code: 'TS_LAYOUT_INVALID' });
    await assert.rejects(openOciArchiveSource(await tarWith('badjson.tar', [layout[0] as { name: string; data: string }, { name: 'index.json', data: '{' }])), { code: 'TS_LAYOUT_INVALID' });
  });
  await t.test('index referencing a missing blob: TS_BLOB_UNKNOWN', async () => {
    const src = await openOciArchiveSource(await tarWith('noblob.tar', layout));
    await assert.rejects(src.root(), { code: 'TS_BLOB_UNKNOWN' });
  });
  await t.test('a blob whose bytes do not match: TS_DIGEST_MISMATCH', async () => {
    const layer = img.layers[0] as Descriptor;
    const size = layer.size;
    const entries = [...layout, { name: `blobs/sha256/${img.manifestDigest.slice(7)}`, data: img.root.bytes }, { name: `blobs/sha256/${layer.digest.slice(7)}`, data: Buffer.alloc(size, 1) }];
    const src = await openOciArchiveSource(await tarWith('badblob.tar', entries));
    await assert.rejects(drain(await src.blob(layer)), { code: 'TS_DIGEST_MISMATCH' });
  });
  await t.test('docker-archive: missing or hostile manifest.json entries', async () => {
    await assert.rejects(DockerArchiveSource.open(await tarWith('d-none.tar', [{ name: 'x', data: 'y' }])), { code: 'TS_ARCHIVE_INVALID' });
    await assert.rejects(DockerArchiveSource.open(await tarWith('d-json.tar', [{ name: 'manifest.json', data: '[{' }])), { code: 'TS_ARCHIVE_INVALID' });
    await assert.rejects(DockerArchiveSource.open(await tarWith('d-shape.tar', [{ name: 'manifest.json', data: '[{"Config":1}]' }])), { code: 'TS_ARCHIVE_INVALID' });
    const mj = (config: string, layers: string[]): string => JSON.stringify([{ Config: config, RepoTags: ['a:b'], Layers: layers }]);
    await assert.rejects(DockerArchiveSource.open(await tarWith('d-dotdot.tar', [{ name: 'c.json', data: '{}' }, { name: 'manifest.json', data: mj('c.json', ['../../etc/passwd']) }])), { code: 'TS_ARCHIVE_UNSAFE_PATH' });
    await assert.rejects(DockerArchiveSource.open(await tarWith('d-abs.tar', [{ name: 'manifest.json', data: mj('/etc/passwd', []) }])), { code: 'TS_ARCHIVE_UNSAFE_PATH' });
    await assert.rejects(DockerArchiveSource.open(await tarWith('d-missing.tar', [{ name: 'c.json', data: '{}' }, { name: 'manifest.json', data: mj('c.json', ['l/layer.tar']) }])), { code: 'TS_MANIFEST_BLOB_UNKNOWN' });
    await assert.rejects(
      DockerArchiveSource.open(await tarWith('d-link.tar', [{ name: 'c.json', data: '{}' }, { name: 'l/layer.tar', type: 'symlink', linkname: '../c.json' }, { name: 'manifest.json', data: mj('c.json', ['l/layer.tar']) }])),
      { code: 'TS_ARCHIVE_UNSAFE_PATH' },
    );
  });
});
