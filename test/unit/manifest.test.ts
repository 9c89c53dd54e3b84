import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseManifest } from '../../packages/transship/src/transfer/manifest.js';
import { isTransshipError } from '@transship/core/errors';

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
