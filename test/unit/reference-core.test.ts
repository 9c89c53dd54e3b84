// The shared naming grammar (src/core/reference.ts, src/core/names.ts): tag-or-digest, store locations and region
// names mean the same in the config, `ls`/`verify` store arguments, `copy` references and registry URLs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDigestReference, parseStoreArgument, parseStoreLocation, parseTagOrDigest } from '@transship/core/reference';
import { isTransshipError } from '@transship/core/errors';
import { loadConfig } from '../../packages/transship/src/config/config.js';
import { parseReference } from '../../packages/transship/src/transfer/reference.js';
import { parseTarget } from '../../packages/transship/src/registry/paths.js';
import { openStoreArg } from '../../packages/transship/src/cli/args.js';

const D = `sha256:${'a'.repeat(64)}`;
const code = (fn: () => unknown): string | undefined => {
  try {
    fn();
    return undefined;
  } catch (err) {
    return isTransshipError(err) ? err.code : (err as { code?: string }).code ?? 'thrown';
  }
};

test('tag or digest: the colon decides, and both are validated', () => {
  assert.equal(isDigestReference(D), true);
  assert.equal(isDigestReference('v1.2'), false);
  assert.deepEqual(parseTagOrDigest('v1.2'), { tag: 'v1.2' });
  assert.deepEqual(parseTagOrDigest(D), { digest: D });
  assert.equal(code(() => parseTagOrDigest('sha256:xyz')), 'TS_INVALID_DIGEST');
  assert.equal(code(() => parseTagOrDigest('-bad')), 'TS_INVALID_TAG');
  // The registry's URL parser uses the same rule (a digest-looking reference is a digest, answered DIGEST_INVALID).
  assert.deepEqual(parseTarget(`/v2/a/b/manifests/${D}`), { kind: 'manifest', name: 'a/b', reference: { digest: D } });
  assert.deepEqual(parseTarget('/v2/a/b/manifests/v1'), { kind: 'manifest', name: 'a/b', reference: { tag: 'v1' } });
  assert.equal(code(() => parseTarget('/v2/a/manifests/sha256:xyz')), 'DIGEST_INVALID');
});

test('store locations: one grammar for store arguments, config stores and references', () => {
  assert.deepEqual(parseStoreLocation('dir:./x'), { kind: 'dir', path: './x' });
  assert.deepEqual(parseStoreLocation('s3://bucket/a/b/'), { kind: 's3', bucket: 'bucket', prefix: 'a/b' });
  assert.deepEqual(parseStoreArgument('store:'), { kind: 'configured' });
  assert.deepEqual(parseStoreArgument('store@eu-west-1:'), { kind: 'configured', region: 'eu-west-1' });
  assert.deepEqual(parseStoreArgument('store@eu-west-1'), { kind: 'configured', region: 'eu-west-1' });
  for (const bad of ['dir:', 's3://B', 's3://bucket/../x', 's3://bucket/a//b', 'store@EU:', 'store@:', 'store', 'ftp://x']) {
    assert.equal(code(() => parseStoreArgument(bad)), 'TS_INVALID_REFERENCE', bad);
  }
  // A prefix that a copy reference refuses is refused as a store argument too (they used to differ).
  assert.equal(code(() => parseStoreLocation('s3://bucket/a b')), 'TS_INVALID_REFERENCE');
  assert.equal(code(() => parseReference('s3://bucket/a b//app:1')), 'TS_INVALID_REFERENCE');
});

test('regression: region "eu-" is valid in the config, in `ls store@eu-:` and in `copy store@eu-:…` alike', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ts-region-'));
  try {
    const config = loadConfig({ env: {}, flags: { region: 'eu-', regions: { 'eu-': { store: `dir:${dir}` } }, placement: { fetchOrder: ['eu-'] } } });
    assert.equal(config.region, 'eu-');
    const store = await openStoreArg('store@eu-:', config);
    assert.equal(store.region, 'eu-');
    await store.close();
    assert.deepEqual(parseReference('store@eu-:app:1'), { transport: 'store', location: { kind: 'configured', region: 'eu-' }, region: 'eu-', repo: 'app', tag: '1' });
    // And a name that is invalid is invalid everywhere.
    for (const bad of ['-eu', 'EU', 'e'.repeat(64)]) {
      assert.equal(code(() => loadConfig({ env: {}, flags: { region: bad, regions: { [bad]: { store: `dir:${dir}` } } } })), 'TS_CONFIG_INVALID', bad);
      assert.equal(code(() => parseStoreArgument(`store@${bad}:`)), 'TS_INVALID_REFERENCE', bad);
      assert.equal(code(() => parseReference(`store@${bad}:app:1`)), 'TS_INVALID_REFERENCE', bad);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
