import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseManifest } from '../../packages/transship/src/transfer/manifest.js';
import { isTransshipError } from '@transship/core/errors';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { digestOf } from '@transship/core/digest';
import { FsStore } from '../../packages/transship/src/store/fs-store.js';
import { StoreSource } from '../../packages/transship/src/transfer/store-source.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;
const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d('a'), size: 2 }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('b'), size: 3 }] };

test('parseManifest: manifest and index', () => {
  const m = parseManifest(Buffer.from(JSON.stringify(manifest)));
  assert.equal(m.kind, 'manifest');
  const i = parseManifest(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ mediaType: manifest.mediaType, digest: d('c'), size: 10, platform: { os: 'linux', architecture: 'amd64' } }] }));
  assert.equal(i.kind, 'index');
});

test('parseManifest: malformed input has TS_MANIFEST_INVALID with the field path', () => {
  const cases: Array<[string, RegExp]> = [
    ['{', /not valid JSON/],
    ['[]', /JSON object/],
    [JSON.stringify({ ...manifest, schemaVersion: 1 }), /schemaVersion/],
    [JSON.stringify({ ...manifest, layers: [{ ...manifest.layers[0], digest: 'sha256:../../etc' }] }), /layers\.0\.digest/],
    [JSON.stringify({ ...manifest, config: { ...manifest.config, size: -1 } }), /config\.size/],
  ];
  for (const [text, re] of cases) assert.throws(() => parseManifest(text), (e) => isTransshipError(e, 'TS_MANIFEST_INVALID') && re.test(e.message), text);
});

test('parseManifest: declared media type must match the body', () => {
  assert.throws(() => parseManifest(JSON.stringify(manifest), 'application/vnd.docker.distribution.manifest.v2+json'), (e) => isTransshipError(e, 'TS_MANIFEST_INVALID') && /mismatch/.test(e.message));
});

// Regression: transfer/manifest.ts called an index without mediaType a Docker manifest list, sources/descriptors.ts
// an OCI index; one validator now, and OCI image-spec decides: no mediaType + `manifests` = an OCI index.
test('parseManifest: an index without mediaType is an OCI index; a declared Docker type is kept only when the shape fits', () => {
  const bare = JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: manifest.mediaType, digest: d('c'), size: 10 }] });
  const i = parseManifest(bare);
  assert.equal(i.kind, 'index');
  assert.equal(i.mediaType, 'application/vnd.oci.image.index.v1+json');
  assert.equal(parseManifest(bare, 'application/vnd.oci.image.index.v1+json').mediaType, 'application/vnd.oci.image.index.v1+json');
  // Declared with a Docker type and shaped like one: that type (what the client pushed with, issue 20 item 6); a
  // declared type the body's shape contradicts is refused.
  assert.equal(parseManifest(bare, 'application/vnd.docker.distribution.manifest.list.v2+json').mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json');
  assert.throws(() => parseManifest(bare, 'application/vnd.docker.distribution.manifest.v2+json'), { code: 'TS_MANIFEST_INVALID' });
  const docker = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json', manifests: [] });
  assert.equal(parseManifest(docker).mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json');
  const { mediaType: _omit, ...bareManifest } = manifest;
  assert.equal(parseManifest(JSON.stringify(bareManifest)).mediaType, 'application/vnd.oci.image.manifest.v1+json');
});

test('regression: an image read back from a store without a declared type is an OCI index, not a Docker list', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ts-manifest-'));
  const store = new FsStore(dir);
  try {
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: manifest.mediaType, digest: d('c'), size: 10 }] }));
    const digest = digestOf(body);
    await store.putBlob(digest, () => Readable.from([body]), { size: body.length });
    await store.putTag('app', '1', digest);
    const root = await new StoreSource(store, 'app', '1').root();
    assert.equal(root.descriptor.mediaType, 'application/vnd.oci.image.index.v1+json');
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});
