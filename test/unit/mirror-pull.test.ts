// The pull-through mirror against a real upstream registry on loopback (transship's own registry, in-process, behind
// a counting proxy): misses fetched once and stored, hits served from the store, both ways of naming the upstream
// (path prefix and containerd's ?ns=), pushes refused, concurrent misses coalesced, tags revalidated after the TTL,
// serve-stale when the upstream is down, a corrupted upstream body refused and not stored, credentials never logged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import pino from 'pino';
import { log, setLogger } from '@transship/core/log';
import { processMetrics } from '@transship/core/metrics-registry';
import '../../packages/transship/src/telemetry/metrics.js';
import { FsStore } from '../../packages/transship/src/store/fs-store.js';
import { StoreMetaStore } from '../../packages/transship/src/registry/meta.js';
import { hashPassword, type AuthConfig } from '../../packages/transship/src/registry/auth.js';
import { Mirror } from '../../packages/transship/src/mirror/mirror.js';
import { Upstreams, type MirrorConfig } from '../../packages/transship/src/mirror/upstreams.js';
import { configSchema } from '../../packages/transship/src/config/config.js';
import { injector, pushImage, startTestRegistry, type TestImage, type TestRegistry } from '../support/registry.js';
import { startCountingProxy, type CountingProxy } from '../support/counting-proxy.js';

const tmp = await mkdtemp(join(tmpdir(), 'ts-mirror-'));
test.after(() => rm(tmp, { recursive: true, force: true }));
const metrics = processMetrics();
const metric = async (name: string, labels: Record<string, string> = {}): Promise<number> =>
  ((await metrics.getSingleMetric(name)?.get())?.values ?? []).filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((a, v) => a + v.value, 0);

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function image(seed: string, layerBytes: number): TestImage {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }));
  const layer = randomBytes(layerBytes);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }],
    }),
  );
  return { config, layer, manifest, manifestDigest: sha(manifest), configDigest: sha(config), layerDigest: sha(layer) };
}

interface Bed {
  upstream: TestRegistry;
  proxy: CountingProxy;
  mirror: TestRegistry;
  engine: Mirror;
  store: FsStore;
  clock: { now: number };
  close(): Promise<void>;
}

const PASSWORD = 'upstream-secret-pw-4711';

async function bed(name: string, upstreamCfg: Partial<MirrorConfig['upstreams'][number]> = {}, upstreamAuth = false, logger?: typeof log, mirrorAuth?: AuthConfig): Promise<Bed> {
  const upStore = new FsStore(join(tmp, name, 'up'));
  const upstream = await startTestRegistry({
    store: upStore,
    meta: new StoreMetaStore(upStore),
    ...(upstreamAuth
      ? { auth: { users: { mirror: hashPassword(PASSWORD), pusher: hashPassword('pusher-pw') }, access: [{ users: ['*'], repositories: ['*'], actions: ['pull', 'push'] }], tokenSecret: 'a-secret-of-at-least-16-chars' } }
      : {}),
  });
  const proxy = await startCountingProxy(upstream.url);
  const store = new FsStore(join(tmp, name, 'mirror'));
  const clock = { now: Date.now() };
  const config = configSchema.parse({ mirror: { upstreams: [{ registry: proxy.host, url: proxy.url, prefix: 'up', tagTtl: '5m', ...upstreamCfg }] } }).mirror!;
  const engine = new Mirror(new Upstreams(config), { dir: join(tmp, name), now: () => clock.now });
  const mirror = await startTestRegistry({ store, meta: new StoreMetaStore(store), mirror: engine, ...(logger ? { logger } : {}), ...(mirrorAuth ? { auth: mirrorAuth } : {}) });
  return {
    upstream,
    proxy,
    mirror,
    engine,
    store,
    clock,
    close: async () => {
      await mirror.close();
      await proxy.stop();
      await upstream.close();
    },
  };
}

const blobGets = (p: CountingProxy, digest: string): number => p.count('GET', new RegExp(`/blobs/${digest}$`));

test('a miss is fetched once and stored under the mirrored name; later reads are hits, by path prefix and by ?ns=', async () => {
  const b = await bed('basic');
  try {
    const img = image('basic', 64 * 1024);
    assert.equal((await pushImage(injector(b.upstream.app), 'team/app', 'v1', img)).statusCode, 201);

    const m = await fetch(`${b.mirror.url}/v2/up/team/app/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(m.status, 200);
    assert.equal(m.headers.get('docker-content-digest'), img.manifestDigest);
    assert.equal(m.headers.get('x-transship-mirror'), 'miss');
    assert.deepEqual(Buffer.from(await m.arrayBuffer()), img.manifest);
    for (const [digest, bytes] of [[img.configDigest, img.config], [img.layerDigest, img.layer]] as const) {
      const r = await fetch(`${b.mirror.url}/v2/up/team/app/blobs/${digest}`);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('x-transship-mirror'), 'miss');
      assert.equal(Number(r.headers.get('content-length')), bytes.length);
      assert.deepEqual(Buffer.from(await r.arrayBuffer()), bytes);
    }
    // Stored in the same content-addressed store, the manifest linked and tagged under the mirrored name.
    assert.equal(await b.store.getTag('up/team/app', 'v1'), img.manifestDigest);
    assert.ok(await b.store.hasManifestLink('up/team/app', img.manifestDigest));
    await b.engine.drain();
    assert.equal((await b.store.statBlob(img.layerDigest))?.size, img.layer.length);

    // Again, by prefix and by containerd's ns=: answered from the store, no upstream request.
    b.proxy.reset();
    const ns = encodeURIComponent(b.proxy.host);
    for (const url of [`/v2/up/team/app/manifests/v1`, `/v2/team/app/manifests/v1?ns=${ns}`, `/v2/team/app/manifests/${img.manifestDigest}?ns=${ns}`]) {
      const r = await fetch(`${b.mirror.url}${url}`);
      assert.equal(r.status, 200, url);
      assert.equal(r.headers.get('docker-content-digest'), img.manifestDigest);
      await r.arrayBuffer();
    }
    const layer = await fetch(`${b.mirror.url}/v2/team/app/blobs/${img.layerDigest}?ns=${ns}`);
    assert.deepEqual(Buffer.from(await layer.arrayBuffer()), img.layer);
    assert.equal(b.proxy.counts.size, 0, `no upstream request for hits: ${[...b.proxy.counts.keys()].join(', ')}`);

    // Not mirrored: another prefix, or an ns= naming no upstream, is the registry's own namespace.
    assert.equal((await fetch(`${b.mirror.url}/v2/team/app/manifests/v1`)).status, 404);
    assert.equal((await fetch(`${b.mirror.url}/v2/team/app/manifests/v1?ns=elsewhere.example`)).status, 404);
    assert.equal(b.proxy.counts.size, 0);
    // Spools are gone once the fetches are over.
    assert.deepEqual((await readdir(join(tmp, 'basic'))).filter((f) => f.startsWith('.mirror-')), []);
  } finally {
    await b.close();
  }
});

test('pushes into a mirrored namespace are refused with DENIED (unless allowPush); elsewhere they work', async () => {
  const b = await bed('push');
  try {
    const img = image('push', 1024);
    const refused = await pushImage(injector(b.mirror.app), 'up/team/app', 'v1', img).catch((err: Error) => err);
    assert.ok(refused instanceof Error);
    const viaNs = await injector(b.mirror.app)({ method: 'PUT', url: `/v2/team/app/manifests/v1?ns=${encodeURIComponent(b.proxy.host)}`, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, payload: img.manifest });
    assert.equal(viaNs.statusCode, 403);
    assert.equal((JSON.parse(viaNs.body) as { errors: Array<{ code: string }> }).errors[0]?.code, 'DENIED');
    const upload = await injector(b.mirror.app)({ method: 'POST', url: '/v2/up/team/app/blobs/uploads/' });
    assert.equal(upload.statusCode, 403);
    assert.equal((JSON.parse(upload.body) as { errors: Array<{ code: string }> }).errors[0]?.code, 'DENIED');
    assert.equal((await pushImage(injector(b.mirror.app), 'mine/app', 'v1', img)).statusCode, 201);
    assert.equal(b.proxy.counts.size, 0);
  } finally {
    await b.close();
  }
  const allowed = await bed('push-allowed', { allowPush: true });
  try {
    assert.equal((await pushImage(injector(allowed.mirror.app), 'up/team/app', 'v1', image('allowed', 1024))).statusCode, 201);
  } finally {
    await allowed.close();
  }
});

test('4 concurrent misses of an uncached blob make one upstream fetch; every client gets the whole verified blob', async () => {
  const b = await bed('coalesce');
  try {
    const img = image('coalesce', 24 * 1024 * 1024);
    assert.equal((await pushImage(injector(b.upstream.app), 'team/big', 'v1', img)).statusCode, 201);
    const waitersBefore = await metric('mirror_coalesced_waiters_total', { kind: 'blob' });
    const started = performance.now();
    const firstBytes: number[] = [];
    const bodies = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const r = await fetch(`${b.mirror.url}/v2/up/team/big/blobs/${img.layerDigest}`);
        assert.equal(r.status, 200);
        const reader = r.body!.getReader();
        const chunks: Buffer[] = [];
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (!chunks.length) firstBytes.push(performance.now() - started);
          chunks.push(Buffer.from(value));
        }
        return Buffer.concat(chunks);
      }),
    );
    const total = performance.now() - started;
    for (const body of bodies) assert.equal(sha(body), img.layerDigest);
    assert.equal(blobGets(b.proxy, img.layerDigest), 1, 'one upstream GET for 4 concurrent misses');
    assert.equal((await metric('mirror_coalesced_waiters_total', { kind: 'blob' })) - waitersBefore, 3);
    // For the report: time to first byte of each client vs the whole exchange.
    process.stdout.write(`# mirror coalesce: 4 clients, 24 MiB: first bytes at ${firstBytes.map((t) => t.toFixed(0)).join(', ')} ms; all done at ${total.toFixed(0)} ms\n`);
    await b.engine.drain();
    assert.equal((await b.store.statBlob(img.layerDigest))?.size, img.layer.length);
    const again = await fetch(`${b.mirror.url}/v2/up/team/big/blobs/${img.layerDigest}`, { headers: { range: 'bytes=10-19' } });
    assert.equal(again.status, 206);
    assert.deepEqual(Buffer.from(await again.arrayBuffer()), img.layer.subarray(10, 20));
    assert.equal(blobGets(b.proxy, img.layerDigest), 1);
  } finally {
    await b.close();
  }
});

test('stored once: a layer the store already holds (a pushed image) is linked and served, not fetched upstream', async () => {
  const b = await bed('shared');
  try {
    const img = image('shared', 256 * 1024);
    assert.equal((await pushImage(injector(b.upstream.app), 'team/app', 'v1', img)).statusCode, 201);
    assert.equal((await pushImage(injector(b.mirror.app), 'mine/app', 'v1', img)).statusCode, 201);
    b.proxy.reset();
    const r = await fetch(`${b.mirror.url}/v2/up/team/app/blobs/${img.layerDigest}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-transship-mirror'), 'hit');
    assert.deepEqual(Buffer.from(await r.arrayBuffer()), img.layer);
    assert.equal(blobGets(b.proxy, img.layerDigest), 0);
  } finally {
    await b.close();
  }
});

test('across instances: two mirrors on one store each fetch once; the store keeps one copy (conditional write)', async () => {
  const b = await bed('two');
  const config = configSchema.parse({ mirror: { upstreams: [{ registry: b.proxy.host, url: b.proxy.url, prefix: 'up' }] } }).mirror!;
  const engine2 = new Mirror(new Upstreams(config), { dir: join(tmp, 'two') });
  const second = await startTestRegistry({ store: b.store, meta: new StoreMetaStore(b.store), mirror: engine2 });
  try {
    const img = image('two', 8 * 1024 * 1024);
    assert.equal((await pushImage(injector(b.upstream.app), 'team/app', 'v1', img)).statusCode, 201);
    const bodies = await Promise.all([b.mirror, second, b.mirror, second].map(async (m) => Buffer.from(await (await fetch(`${m.url}/v2/up/team/app/blobs/${img.layerDigest}`)).arrayBuffer())));
    for (const body of bodies) assert.equal(sha(body), img.layerDigest);
    await b.engine.drain();
    await engine2.drain();
    assert.equal(blobGets(b.proxy, img.layerDigest), 2, 'one upstream GET per instance');
    assert.equal((await b.store.statBlob(img.layerDigest))?.size, img.layer.length);
  } finally {
    await second.close();
    await b.close();
  }
});

test('with auth on at the mirror: access rules see the stored name, blob links are written, a pull through ?ns= works', async () => {
  const auth: AuthConfig = { users: {}, access: [{ users: ['anonymous'], repositories: ['up/team/*'], actions: ['pull'] }], tokenSecret: 'a-secret-of-at-least-16-chars' };
  const b = await bed('mirror-auth', {}, false, undefined, auth);
  try {
    const img = image('mirror-auth', 4096);
    assert.equal((await pushImage(injector(b.upstream.app), 'team/app', 'v1', img)).statusCode, 201);
    assert.equal((await pushImage(injector(b.upstream.app), 'other/app', 'v1', img)).statusCode, 201);
    const ns = `ns=${encodeURIComponent(b.proxy.host)}`;
    const m = await fetch(`${b.mirror.url}/v2/team/app/manifests/v1?${ns}`);
    assert.equal(m.status, 200);
    await m.arrayBuffer();
    for (const [digest, bytes] of [[img.configDigest, img.config], [img.layerDigest, img.layer]] as const) {
      const r = await fetch(`${b.mirror.url}/v2/team/app/blobs/${digest}?${ns}`);
      assert.equal(r.status, 200);
      assert.deepEqual(Buffer.from(await r.arrayBuffer()), bytes);
    }
    await b.engine.drain();
    const again = await fetch(`${b.mirror.url}/v2/up/team/app/blobs/${img.layerDigest}`);
    assert.equal(again.headers.get('x-transship-mirror'), 'hit');
    await again.arrayBuffer();
    // The rules are checked on the stored name before anything is fetched: other/app is up/other/app here.
    b.proxy.reset();
    const refused = await fetch(`${b.mirror.url}/v2/other/app/manifests/v1?${ns}`);
    assert.equal(refused.status, 401);
    assert.match(refused.headers.get('www-authenticate') ?? '', /repository:up\/other\/app:pull/);
    assert.equal(b.proxy.counts.size, 0);
  } finally {
    await b.close();
  }
});

test('tags: served from the store within the TTL, revalidated with one HEAD after it, refetched only when moved; serve-stale when the upstream is down', async () => {
  const b = await bed('ttl', { tagTtl: '60s' });
  try {
    const up = injector(b.upstream.app);
    const v1 = image('ttl-1', 2048);
    const v2 = image('ttl-2', 2048);
    assert.equal((await pushImage(up, 'team/app', 'latest', v1)).statusCode, 201);
    const get = async (): Promise<Response> => {
      const r = await fetch(`${b.mirror.url}/v2/up/team/app/manifests/latest`);
      await r.arrayBuffer();
      return r;
    };
    assert.equal((await get()).headers.get('docker-content-digest'), v1.manifestDigest);
    assert.equal((await pushImage(up, 'team/app', 'latest', v2)).statusCode, 201);
    b.proxy.reset();
    // Within the TTL: the stored tag, no upstream request.
    b.clock.now += 30_000;
    assert.equal((await get()).headers.get('docker-content-digest'), v1.manifestDigest);
    assert.equal(b.proxy.counts.size, 0);
    // After it: one HEAD, and the moved tag is fetched by digest.
    b.clock.now += 31_000;
    const moved = await get();
    assert.equal(moved.headers.get('docker-content-digest'), v2.manifestDigest);
    assert.equal(moved.headers.get('x-transship-mirror'), 'miss');
    assert.equal(b.proxy.count('HEAD', /\/manifests\/latest$/), 1);
    assert.equal(b.proxy.count('GET', new RegExp(`/manifests/${v2.manifestDigest}$`)), 1);
    // Unchanged after the next TTL: one HEAD, no GET.
    b.proxy.reset();
    b.clock.now += 61_000;
    const same = await get();
    assert.equal(same.headers.get('docker-content-digest'), v2.manifestDigest);
    assert.equal(same.headers.get('x-transship-mirror'), 'hit');
    assert.equal(b.proxy.count('HEAD', /\/manifests\/latest$/), 1);
    assert.equal(b.proxy.count('GET', /\/manifests\//), 0);
    // Upstream answering 503: the stored tag is served, and said to be stale.
    const staleBefore = await metric('mirror_requests_total', { result: 'stale' });
    b.proxy.down = true;
    b.clock.now += 61_000;
    const stale = await get();
    assert.equal(stale.status, 200);
    assert.equal(stale.headers.get('docker-content-digest'), v2.manifestDigest);
    assert.equal(stale.headers.get('x-transship-mirror'), 'stale');
    assert.equal((await metric('mirror_requests_total', { result: 'stale' })) - staleBefore, 1);
    // Upstream gone altogether (connection refused): still served. A tag never fetched is 503.
    await b.proxy.stop();
    assert.equal((await get()).headers.get('x-transship-mirror'), 'stale');
    const never = await fetch(`${b.mirror.url}/v2/up/team/app/manifests/never`);
    assert.equal(never.status, 503);
  } finally {
    await b.mirror.close();
    await b.upstream.close();
  }
});

test('an upstream body that does not match its digest is refused: the client sees a broken body and nothing is stored', async () => {
  const b = await bed('corrupt');
  try {
    const img = image('corrupt', 512 * 1024);
    assert.equal((await pushImage(injector(b.upstream.app), 'team/app', 'v1', img)).statusCode, 201);
    b.proxy.corrupt = new RegExp(`/blobs/${img.layerDigest}$`);
    const before = await metric('mirror_upstream_requests_total', { kind: 'blob', result: 'digest_mismatch' });
    const r = await fetch(`${b.mirror.url}/v2/up/team/app/blobs/${img.layerDigest}`);
    assert.equal(r.status, 200); // headers go out before the last byte is hashed
    await assert.rejects(r.arrayBuffer());
    await b.engine.drain();
    assert.equal((await metric('mirror_upstream_requests_total', { kind: 'blob', result: 'digest_mismatch' })) - before, 1);
    assert.equal(await b.store.statBlob(img.layerDigest), undefined, 'nothing unverified is stored');
    // A corrupted manifest is refused before anything is stored or served.
    b.proxy.corrupt = /\/manifests\//;
    const m = await fetch(`${b.mirror.url}/v2/up/team/app/manifests/v1`);
    assert.equal(m.status, 502);
    assert.equal(await b.store.getTag('up/team/app', 'v1'), undefined);
    // Once the upstream is healthy, the next miss fetches again and stores it.
    b.proxy.corrupt = undefined;
    const ok = await fetch(`${b.mirror.url}/v2/up/team/app/blobs/${img.layerDigest}`);
    assert.equal(sha(Buffer.from(await ok.arrayBuffer())), img.layerDigest);
    await b.engine.drain();
    assert.equal((await b.store.statBlob(img.layerDigest))?.size, img.layer.length);
  } finally {
    await b.close();
  }
});

test('an upstream with token auth: the mirror logs in with its credentials, which never appear in any log', async () => {
  const lines: string[] = [];
  const sink = new PassThrough();
  sink.on('data', (c: Buffer) => lines.push(c.toString('utf8')));
  const previous = log;
  setLogger(pino({ level: 'trace' }, sink));
  const b = await bed('auth', { credentials: { username: 'mirror', password: PASSWORD } }, true, log);
  const wrong = await bed('auth-wrong', { credentials: { username: 'mirror', password: `${PASSWORD}-wrong` } }, true, log);
  try {
    const img = image('auth', 4096);
    const push = await pushImage(injector(b.upstream.app), 'team/private', 'v1', img, { authorization: `Basic ${Buffer.from('pusher:pusher-pw').toString('base64')}` });
    assert.equal(push.statusCode, 201);
    const m = await fetch(`${b.mirror.url}/v2/up/team/private/manifests/v1`);
    assert.equal(m.status, 200);
    const layer = await fetch(`${b.mirror.url}/v2/up/team/private/blobs/${img.layerDigest}`);
    assert.deepEqual(Buffer.from(await layer.arrayBuffer()), img.layer);
    // Wrong credentials: the client is told DENIED (not a 401 that would send it to our token service).
    const denied = await fetch(`${wrong.mirror.url}/v2/up/team/private/manifests/v1`);
    assert.equal(denied.status, 403);
  } finally {
    await wrong.close();
    await b.close();
    setLogger(previous);
  }
  const all = lines.join('');
  assert.ok(all.length > 0, 'something was logged');
  for (const secret of [PASSWORD, Buffer.from(`mirror:${PASSWORD}`).toString('base64'), Buffer.from(`mirror:${PASSWORD}-wrong`).toString('base64')]) {
    assert.ok(!all.includes(secret), `a credential leaked into the logs: ${secret.slice(0, 6)}…`);
  }
});
