// Reference parsing: skopeo-compatible splitting, docker.io normalization, store references, and hostile names
// that must never reach a path or a key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatReference, normalizeDockerName, parseImageReference, parseReference, parseStoreReference } from '../../packages/transship/src/transfer/reference.js';

const D = `sha256:${'a'.repeat(64)}`;

function code(input: string): string {
  try {
    parseReference(input);
  } catch (err) {
    return (err as { code: string }).code;
  }
  return 'ok';
}

void test('oci: splits at the first colon like containers/image on Linux', () => {
  assert.deepEqual(parseReference('oci:/tmp/layout'), { transport: 'oci', path: '/tmp/layout' });
  assert.deepEqual(parseReference('oci:/tmp/layout:v1.2'), { transport: 'oci', path: '/tmp/layout', tag: 'v1.2' });
  assert.deepEqual(parseReference('oci:rel/dir:latest'), { transport: 'oci', path: 'rel/dir', tag: 'latest' });
  assert.deepEqual(parseReference(`oci:/tmp/layout:${D}`), { transport: 'oci', path: '/tmp/layout', digest: D });
  assert.deepEqual(parseReference('oci-archive:/tmp/x.tar:t'), { transport: 'oci-archive', path: '/tmp/x.tar', tag: 't' });
});

void test('oci: rejects empty paths, empty tags, bad tags and bad digests', () => {
  assert.equal(code('oci:'), 'TS_INVALID_REFERENCE');
  assert.equal(code('oci::tag'), 'TS_INVALID_REFERENCE');
  assert.equal(code('oci:/x:'), 'TS_INVALID_REFERENCE');
  assert.equal(code('oci:/x:-bad'), 'TS_INVALID_TAG');
  assert.equal(code('oci:/x:a/b'), 'TS_INVALID_TAG');
  assert.equal(code('oci:/x:sha256:abc'), 'TS_INVALID_DIGEST');
  assert.equal(code('oci:/x:md5:abc'), 'TS_UNSUPPORTED_ALGORITHM');
  assert.equal(code('oci:/x\0y'), 'TS_INVALID_REFERENCE');
});

void test('unknown or missing transports name the expected forms', () => {
  assert.equal(code(''), 'TS_INVALID_REFERENCE');
  assert.equal(code('busybox:latest'), 'TS_INVALID_REFERENCE');
  assert.equal(code('docker:busybox'), 'TS_INVALID_REFERENCE');
  assert.equal(code('/tmp/layout'), 'TS_INVALID_REFERENCE');
  try {
    parseReference('ftp:x');
    assert.fail('should throw');
  } catch (err) {
    assert.match((err as Error).message, /oci:DIR/);
  }
});

void test('docker:// normalizes like docker (docker.io, library/, latest)', () => {
  assert.deepEqual(parseReference('docker://busybox'), { transport: 'docker', registry: 'docker.io', endpoint: 'registry-1.docker.io', repo: 'library/busybox', tag: 'latest' });
  assert.deepEqual(parseReference('docker://bitnami/redis:7'), { transport: 'docker', registry: 'docker.io', endpoint: 'registry-1.docker.io', repo: 'bitnami/redis', tag: '7' });
  assert.deepEqual(parseReference('docker://localhost:5000/a/b:t'), { transport: 'docker', registry: 'localhost:5000', endpoint: 'localhost:5000', repo: 'a/b', tag: 't' });
  assert.deepEqual(parseReference(`docker://quay.io/x/y@${D}`), { transport: 'docker', registry: 'quay.io', endpoint: 'quay.io', repo: 'x/y', digest: D });
  assert.deepEqual(parseReference('docker://index.docker.io/alpine'), { transport: 'docker', registry: 'docker.io', endpoint: 'registry-1.docker.io', repo: 'library/alpine', tag: 'latest' });
  assert.deepEqual(parseReference('docker://127.0.0.1:5000/r'), { transport: 'docker', registry: '127.0.0.1:5000', endpoint: '127.0.0.1:5000', repo: 'r', tag: 'latest' });
});

void test('docker:// rejects hostile and malformed names', () => {
  assert.equal(code('docker://'), 'TS_INVALID_REFERENCE');
  assert.equal(code('docker://Busybox'), 'TS_INVALID_NAME');
  assert.equal(code('docker://../etc/passwd'), 'TS_INVALID_REFERENCE');
  assert.equal(code('docker://localhost:5000/../x'), 'TS_INVALID_NAME');
  assert.equal(code('docker://localhost:5000//x'), 'TS_INVALID_NAME');
  assert.equal(code('docker://localhost:5000/'), 'TS_INVALID_REFERENCE');
  assert.equal(code(`docker://busybox:1@${D}`), 'TS_INVALID_REFERENCE');
  assert.equal(code('docker://busybox:'), 'TS_INVALID_TAG');
  assert.equal(code('docker://bad_host!:5000/x'), 'TS_INVALID_REFERENCE');
});

void test('docker-archive: optional RepoTag (normalized) or @index', () => {
  assert.deepEqual(parseReference('docker-archive:/x.tar'), { transport: 'docker-archive', path: '/x.tar' });
  assert.deepEqual(parseReference('docker-archive:/x.tar:busybox:1'), { transport: 'docker-archive', path: '/x.tar', name: 'docker.io/library/busybox:1' });
  assert.deepEqual(parseReference('docker-archive:/x.tar:@2'), { transport: 'docker-archive', path: '/x.tar', index: 2 });
  assert.equal(code('docker-archive:/x.tar:@-1'), 'TS_INVALID_REFERENCE');
  assert.equal(code(`docker-archive:/x.tar:busybox@${D}`), 'TS_INVALID_REFERENCE');
  assert.equal(normalizeDockerName('busybox'), 'docker.io/library/busybox:latest');
  assert.equal(normalizeDockerName('NOT VALID'), undefined);
});

void test('dir: and s3:// — last component is the repository unless "//" marks the boundary', () => {
  assert.deepEqual(parseReference('dir:/srv/ts/busybox:1.36'), { transport: 'dir', location: { kind: 'dir', path: '/srv/ts' }, repo: 'busybox', tag: '1.36' });
  assert.deepEqual(parseReference('dir:/srv/ts//library/busybox'), { transport: 'dir', location: { kind: 'dir', path: '/srv/ts' }, repo: 'library/busybox', tag: 'latest' });
  assert.deepEqual(parseReference(`dir:store/r@${D}`), { transport: 'dir', location: { kind: 'dir', path: 'store' }, repo: 'r', digest: D });
  assert.deepEqual(parseReference('s3://bucket/busybox:1'), { transport: 's3', location: { kind: 's3', bucket: 'bucket', prefix: '' }, repo: 'busybox', tag: '1' });
  assert.deepEqual(parseReference('s3://bucket/pre/fix/busybox:1'), { transport: 's3', location: { kind: 's3', bucket: 'bucket', prefix: 'pre/fix' }, repo: 'busybox', tag: '1' });
  assert.deepEqual(parseReference('s3://bucket/pre//library/busybox:1'), { transport: 's3', location: { kind: 's3', bucket: 'bucket', prefix: 'pre' }, repo: 'library/busybox', tag: '1' });
  assert.deepEqual(parseReference('s3://bucket//library/busybox'), { transport: 's3', location: { kind: 's3', bucket: 'bucket', prefix: '' }, repo: 'library/busybox', tag: 'latest' });
});

void test('store: and store@REGION: name the configured stores', () => {
  assert.deepEqual(parseReference('store:library/busybox:1'), { transport: 'store', location: { kind: 'configured' }, repo: 'library/busybox', tag: '1' });
  assert.deepEqual(parseReference('store@eu-west-1:app:2'), { transport: 'store', location: { kind: 'configured', region: 'eu-west-1' }, region: 'eu-west-1', repo: 'app', tag: '2' });
  assert.equal(code('store@:app'), 'TS_INVALID_REFERENCE');
  assert.equal(code('store@EU:app'), 'TS_INVALID_REFERENCE');
  assert.equal(code('store:'), 'TS_INVALID_REFERENCE');
});

void test('store references reject hostile repositories, tags, buckets and prefixes', () => {
  assert.equal(code('dir:/srv/ts//../etc:1'), 'TS_INVALID_NAME');
  assert.equal(code('dir:/srv/ts//a/../../etc:1'), 'TS_INVALID_NAME');
  assert.equal(code('dir:/srv/ts///abs:1'), 'TS_INVALID_NAME');
  assert.equal(code('dir:/srv/ts/UPPER:1'), 'TS_INVALID_NAME');
  assert.equal(code('dir:/srv/ts/a:.hidden'), 'TS_INVALID_TAG');
  assert.equal(code('dir:/srv/ts/:1'), 'TS_INVALID_REFERENCE');
  assert.equal(code('dir:busybox'), 'TS_INVALID_REFERENCE');
  assert.equal(code('dir:'), 'TS_INVALID_REFERENCE');
  assert.equal(code('s3://bucket'), 'TS_INVALID_REFERENCE');
  assert.equal(code('s3://Bucket/x'), 'TS_INVALID_REFERENCE');
  assert.equal(code('s3://b/x'), 'TS_INVALID_REFERENCE');
  assert.equal(code('s3://bucket/../x:1'), 'TS_INVALID_REFERENCE');
  assert.equal(code('s3://bucket/./p/x:1'), 'TS_INVALID_REFERENCE');
  assert.equal(code('s3://bucket/p//'), 'TS_INVALID_REFERENCE');
  assert.equal(code(`s3://bucket/x:1@${D}`), 'TS_INVALID_REFERENCE');
  assert.equal(code('store:a:b:c'), 'TS_INVALID_TAG');
  assert.equal(code(`store:${'a'.repeat(300)}`), 'TS_INVALID_NAME');
});

void test('parseImageReference refuses stores; parseStoreReference refuses image transports', () => {
  assert.throws(() => parseImageReference('dir:/a/b'), { code: 'TS_INVALID_REFERENCE' });
  assert.throws(() => parseStoreReference('oci:/a'), { code: 'TS_INVALID_REFERENCE' });
});

void test('formatReference round-trips through parseReference', () => {
  for (const s of ['oci:/a:t', `oci:/a:${D}`, 'oci-archive:/a.tar', 'docker-archive:/a.tar:@1', 'docker://docker.io/library/busybox:latest', `docker://quay.io/a/b@${D}`, 'dir:/s//a/b:t', 's3://bucket/p//a:t', 's3://bucket/a:t', 'store@eu:a/b:t']) {
    const parsed = parseReference(s);
    assert.deepEqual(parseReference(formatReference(parsed)), parsed, s);
  }
});
