// Issue 17 items 1–3: `transship copy` writes docker:// — any OCI distribution registry. Real registries on
// loopback: Distribution 2.8 from Debian (htpasswd, Basic auth, on RGW) and `transship serve` (bearer tokens from its
// /token, per-repository rules); skopeo checks the round trips byte for byte.
// Regressions guarded: docker:// could only be read (TS_USAGE "can only be read from"); a re-push must upload
// nothing; a copy within one registry must mount, not upload; auth failures must be a clear, unretried
// TS_UNAUTHORIZED; a dead registry a TS_NETWORK.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { makeOciLayout, type BuiltImage } from '../support/images.js';
import { createTestBucket, s3TestConfig } from '../support/rgw.js';
import { startDistribution, type Distribution } from '../support/distribution.js';
import { htpasswd, layoutBlobs, run, skopeo, spawnServe, type RunResult, type ServeProcess } from '../support/registry.js';
import { CLI } from '../support/cli.js';

const s3 = s3TestConfig();
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

let work = '';
let dist: Distribution;
let serve: ServeProcess;
let single: BuiltImage;
let multi: BuiltImage;

interface Summary {
  digest: string;
  manifests: number;
  blobs: { total: number; uploaded: number; skipped: Record<string, number> };
  requests: { total: number; byOperation: Record<string, number> };
}

/** `transship copy --json`; the parsed summary, or the error code. */
async function copy(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ r: RunResult; summary?: Summary; error?: string }> {
  const r = await run(process.execPath, [CLI, 'copy', '--json', '--no-cache', ...args], { env: { ...env, TRANSSHIP_LOG_LEVEL: 'error' }, timeoutMs: 120_000 });
  const doc = JSON.parse(r.stdout || '{}') as Summary & { error?: { code: string } };
  return { r, ...(doc.error ? { error: doc.error.code } : { summary: doc }) };
}

function ok(r: RunResult, what: string): void {
  assert.equal(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
}

/** skopeo pulls `ref` (every platform) into a fresh layout: the same root digest and the same bytes as `image`. */
async function pullMatches(ref: string, image: BuiltImage, creds: string): Promise<void> {
  const out = await mkdtemp(join(work, 'pull-'));
  ok(await skopeo(['copy', '--all', '--preserve-digests', '--src-tls-verify=false', '--src-creds', creds, ref, `oci:${out}:x`]), `skopeo pull ${ref}`);
  const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  assert.equal(index.manifests[0]?.digest, image.manifestDigest, `${ref}: the root digest survives the round trip`);
  const pushed = await layoutBlobs(image.path);
  const pulled = await layoutBlobs(out);
  assert.deepEqual([...pulled.keys()].sort(), [...pushed.keys()].sort(), `${ref}: the same blobs`);
  for (const [d, h] of pulled) assert.equal(h, pushed.get(d), `${ref}: blob ${d} byte-identical`);
}

before(async () => {
  if (!s3) return;
  work = await mkdtemp(join(tmpdir(), 'ts-copy-reg-'));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  single = await makeOciLayout(join(work, 'single'), { tag: 'v1', seed: 'reg-single', layers: 3 });
  multi = await makeOciLayout(join(work, 'multi'), { tag: 'v1', seed: 'reg-multi', multiArch: true });

  const pw = join(work, 'htpasswd');
  ok(await htpasswd(['-B', '-b', '-c', pw, 'alice', 'alice-pw']), 'htpasswd');
  const bucket = await createTestBucket('copy-reg-dist');
  dist = await startDistribution({ s3: { endpoint: s3.endpoint, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, bucket, region: s3.region }, htpasswd: pw });
  cleanups.push(() => dist.stop());

  const config = join(work, 'serve.yaml');
  await writeFile(
    config,
    [
      `store: dir:${join(work, 'store')}`,
      'serve:',
      `  uploadDir: ${join(work, 'spool')}`,
      '  auth:',
      `    htpasswd: ${pw}`,
      '    users: { bob: "' + (await hash('bob-pw')) + '" }',
      '    access:',
      '      - { users: [alice], repositories: ["alice/*"], actions: [pull, push] }',
      '      - { users: [bob], repositories: ["alice/*"], actions: [pull] }',
      '',
    ].join('\n'),
  );
  serve = await spawnServe(['--config', config]);
  cleanups.push(() => serve.stop());
});

async function hash(password: string): Promise<string> {
  const { hashPassword } = await import('../../packages/transship/src/registry/auth.js');
  return hashPassword(password);
}

test('Distribution (htpasswd): a single image and a multi-arch index are pushed; skopeo pulls them back byte-identical', { skip: !s3, timeout: 300_000 }, async () => {
  const a = await copy(['--dest-creds', 'alice:alice-pw', `oci:${single.path}:v1`, `docker://${dist.host}/team/app:v1`]);
  ok(a.r, 'push single');
  assert.equal(a.summary?.digest, single.manifestDigest);
  assert.equal(a.summary?.blobs.uploaded, a.summary?.blobs.total, 'every blob uploaded once');
  await pullMatches(`docker://${dist.host}/team/app:v1`, single, 'alice:alice-pw');

  const b = await copy(['--dest-creds', 'alice:alice-pw', `oci:${multi.path}:v1`, `docker://${dist.host}/team/multi:v1`]);
  ok(b.r, 'push index');
  assert.equal(b.summary?.digest, multi.manifestDigest);
  assert.equal(b.summary?.manifests, 3, 'the index and both platform manifests');
  await pullMatches(`docker://${dist.host}/team/multi:v1`, multi, 'alice:alice-pw');

  // The same image again: every blob is found by HEAD, nothing is uploaded (no POST, PATCH or blob PUT).
  const again = await copy(['--dest-creds', 'alice:alice-pw', `oci:${multi.path}:v1`, `docker://${dist.host}/team/multi:v1`]);
  ok(again.r, 're-push');
  assert.equal(again.summary?.blobs.uploaded, 0);
  assert.equal(again.summary?.blobs.skipped.exists, again.summary?.blobs.total);
  assert.equal(again.summary?.requests.byOperation.POST, undefined, 'no upload session was opened');
  assert.equal(again.summary?.requests.byOperation.PATCH, undefined);
});

test('Distribution: docker:// → docker:// in one registry mounts every blob (counted) and the copy pulls byte-identical', { skip: !s3, timeout: 300_000 }, async () => {
  ok((await copy(['--dest-creds', 'alice:alice-pw', `oci:${single.path}:v1`, `docker://${dist.host}/mount/src:v1`])).r, 'seed');
  const m = await copy(['--src-creds', 'alice:alice-pw', '--dest-creds', 'alice:alice-pw', `docker://${dist.host}/mount/src:v1`, `docker://${dist.host}/mount/dst:v1`]);
  ok(m.r, 'registry to registry');
  assert.equal(m.summary?.blobs.uploaded, 0);
  assert.equal(m.summary?.blobs.skipped.mount, m.summary?.blobs.total, 'every blob mounted');
  assert.equal(m.summary?.requests.byOperation.PATCH, undefined, 'no byte uploaded');
  await pullMatches(`docker://${dist.host}/mount/dst:v1`, single, 'alice:alice-pw');
});

test('credentials come from REGISTRY_AUTH_FILE and from a docker credential helper', { skip: !s3, timeout: 300_000 }, async () => {
  const authFile = join(work, 'auth.json');
  await writeFile(authFile, JSON.stringify({ auths: { [dist.host]: { auth: Buffer.from('alice:alice-pw').toString('base64') } } }));
  const env = { ...process.env, REGISTRY_AUTH_FILE: authFile, HOME: work, XDG_RUNTIME_DIR: '', DOCKER_CONFIG: join(work, 'nodocker') };
  ok((await copy([`oci:${single.path}:v1`, `docker://${dist.host}/authfile/app:v1`], env)).r, 'push with the auth file');

  // A helper program as docker runs them: `docker-credential-<name> get`, the server on stdin, JSON on stdout.
  const bin = join(work, 'bin');
  await mkdir(bin, { recursive: true });
  const helper = join(bin, 'docker-credential-transship-test');
  await writeFile(helper, `#!/bin/sh\nread server\n[ "$server" = "${dist.host}" ] || { echo "credentials not found in native keychain"; exit 1; }\necho '{"ServerURL":"'"$server"'","Username":"alice","Secret":"alice-pw"}'\n`);
  await chmod(helper, 0o755);
  const dockerDir = join(work, 'docker');
  await mkdir(dockerDir, { recursive: true });
  await writeFile(join(dockerDir, 'config.json'), JSON.stringify({ credHelpers: { [dist.host]: 'transship-test' } }));
  const helperEnv = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}`, HOME: work, XDG_RUNTIME_DIR: '', REGISTRY_AUTH_FILE: '', DOCKER_CONFIG: dockerDir };
  ok((await copy([`oci:${single.path}:v1`, `docker://${dist.host}/helper/app:v1`], helperEnv)).r, 'push with the credential helper');
});

test('wrong credentials and a dead registry fail with stable codes', { skip: !s3, timeout: 300_000 }, async () => {
  const wrong = await copy(['--dest-creds', 'alice:nope', `oci:${single.path}:v1`, `docker://${dist.host}/team/app:v2`]);
  assert.notEqual(wrong.r.code, 0);
  assert.equal(wrong.error, 'TS_UNAUTHORIZED');

  const port = await new Promise<number>((resolve) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const p = (srv.address() as { port: number }).port;
      srv.close(() => resolve(p));
    });
  });
  const dead = await copy([`oci:${single.path}:v1`, `docker://127.0.0.1:${port}/team/app:v1`]);
  assert.notEqual(dead.r.code, 0);
  // Connection refused is retried (a registry restarting comes back), then given up on.
  assert.equal(dead.error, 'TS_RETRY_EXHAUSTED', dead.r.stdout);
  assert.equal((JSON.parse(dead.r.stdout) as { error: { lastError?: string } }).error.lastError, 'TS_NETWORK');
});

test('transship serve (bearer tokens, per-repository rules): push, mount, a pull-only account refused, ls and inspect', { skip: !s3, timeout: 300_000 }, async () => {
  const a = await copy(['--dest-creds', 'alice:alice-pw', `oci:${multi.path}:v1`, `docker://${serve.host}/alice/app:v1`]);
  ok(a.r, 'push index to serve');
  await pullMatches(`docker://${serve.host}/alice/app:v1`, multi, 'alice:alice-pw');

  // With auth on, blobs are linked per repository: the second repository gets them by mount.
  const m = await copy(['--src-creds', 'alice:alice-pw', '--dest-creds', 'alice:alice-pw', `docker://${serve.host}/alice/app:v1`, `docker://${serve.host}/alice/copy:v1`]);
  ok(m.r, 'mount within serve');
  assert.equal(m.summary?.blobs.skipped.mount, m.summary?.blobs.total, 'every blob mounted');
  await pullMatches(`docker://${serve.host}/alice/copy:v1`, multi, 'alice:alice-pw');

  const bob = await copy(['--dest-creds', 'bob:bob-pw', `oci:${single.path}:v1`, `docker://${serve.host}/alice/bob-was-here:v1`]);
  assert.notEqual(bob.r.code, 0, 'a pull-only account cannot push');
  assert.equal(bob.error, 'TS_UNAUTHORIZED');
  const bobRetries = bob.r.stderr.match(/failed, retrying/g)?.length ?? 0;
  assert.equal(bobRetries, 0, 'an authorization failure is never retried');

  const ls = await run(process.execPath, [CLI, 'ls', '--json', '--creds', 'alice:alice-pw', `docker://${serve.host}/alice/copy`]);
  ok(ls, 'ls docker://');
  assert.deepEqual(JSON.parse(ls.stdout), { store: `docker://${serve.host}`, repositories: [{ repository: 'alice/copy', tags: [{ tag: 'v1', digest: multi.manifestDigest }] }] });
  const inspect = await run(process.execPath, [CLI, 'inspect', '--json', '--creds', 'alice:alice-pw', `docker://${serve.host}/alice/copy:v1`]);
  ok(inspect, 'inspect docker://');
  const doc = JSON.parse(inspect.stdout) as { digest: string; manifests: Array<{ platform?: { architecture?: string } }> };
  assert.equal(doc.digest, multi.manifestDigest);
  assert.deepEqual(doc.manifests.map((x) => x.platform?.architecture).sort(), ['amd64', 'arm64']);
});

test('a 300 MB layer pushed to serve: chunked, memory bounded (peak RSS of the copy), byte-identical', { skip: !s3, timeout: 600_000 }, async () => {
  const big = await makeOciLayout(join(work, 'big'), { tag: 'v1', seed: 'reg-big', layers: [{ seed: 'big', size: 300 * 1000 * 1000, gzip: false }] });
  // Peak RSS is read by the copy process itself at exit (getrusage maxrss): exact, no sampling.
  const hook = join(work, 'maxrss.mjs');
  await writeFile(hook, "process.on('exit', () => process.stderr.write(`maxrss=${process.resourceUsage().maxRSS}\\n`));\n");
  const peak = async (image: string, ref: string): Promise<{ r: RunResult; mib: number }> => {
    const r = await run(process.execPath, ['--import', hook, CLI, 'copy', '--json', '--no-cache', '--dest-creds', 'alice:alice-pw', image, ref], { timeoutMs: 300_000 });
    ok(r, `copy ${image}`);
    return { r, mib: Number(/maxrss=(\d+)/.exec(r.stderr)?.[1]) / 1024 };
  };
  // The same command with a 10 KiB image: what Node and the modules cost before any byte moves.
  const baseline = await peak(`oci:${single.path}:v1`, `docker://${serve.host}/alice/baseline:v1`);
  const started = Date.now();
  const { r, mib: maxRssMiB } = await peak(`oci:${big.path}:v1`, `docker://${serve.host}/alice/big:v1`);
  const seconds = (Date.now() - started) / 1000;
  const summary = JSON.parse(r.stdout) as Summary;
  // 300 MB in 8 MiB chunks: one PATCH per chunk, one upload session for the layer.
  assert.ok((summary.requests.byOperation.PATCH ?? 0) >= 36, `chunked: ${JSON.stringify(summary.requests.byOperation)}`);
  // Buffering the layer would add 300 MB; chunks in flight and the GC's slack stay far below that.
  assert.ok(maxRssMiB - baseline.mib < 128, `peak RSS ${maxRssMiB.toFixed(0)} MiB vs ${baseline.mib.toFixed(0)} MiB for a 10 KiB image`);
  console.log(`# 300 MB layer → serve: ${seconds.toFixed(1)} s, peak RSS ${maxRssMiB.toFixed(0)} MiB (10 KiB image: ${baseline.mib.toFixed(0)} MiB), requests ${JSON.stringify(summary.requests.byOperation)}`);
  const out = await mkdtemp(join(work, 'pull-big-'));
  ok(await skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', '--src-creds', 'alice:alice-pw', `docker://${serve.host}/alice/big:v1`, `oci:${out}:x`]), 'skopeo pull 300 MB');
  const pushed = await layoutBlobs(big.path);
  for (const [d, h] of await layoutBlobs(out)) assert.equal(h, pushed.get(d), `blob ${d} byte-identical`);
  await rm(out, { recursive: true, force: true });
  await rm(big.path, { recursive: true, force: true });
});

test('measured: transship copy vs skopeo copy of the same image into the same Distribution — wall time and HTTP requests', { skip: !s3, timeout: 300_000 }, async () => {
  const { startS3Proxy } = await import('../support/s3-proxy.js');
  // The loopback proxy relays any HTTP (Host unchanged, so Distribution's Location URLs point back at it) and counts.
  const proxy = await startS3Proxy({ target: dist.url });
  cleanups.push(() => proxy.close());
  const host = proxy.url.replace('http://', '');
  const image = await makeOciLayout(join(work, 'bench'), { tag: 'v1', seed: 'reg-bench', layers: [{ seed: 'b1', size: 20 * 1024 * 1024, gzip: false }, { seed: 'b2', size: 1024 * 1024, gzip: false }, { seed: 'b3', size: 4096, gzip: false }] });
  const rows: string[] = [];
  const measure = async (who: string, args: () => Promise<RunResult>): Promise<number> => {
    proxy.reset();
    const started = Date.now();
    ok(await args(), who);
    const n = proxy.counts().total;
    rows.push(`${who}: ${((Date.now() - started) / 1000).toFixed(2)} s, ${n} requests`);
    return n;
  };
  const ours = await measure('transship copy (fresh)', async () => (await copy(['--dest-creds', 'alice:alice-pw', `oci:${image.path}:v1`, `docker://${host}/bench/ts:v1`])).r);
  const theirs = await measure('skopeo copy (fresh)', () => skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:alice-pw', `oci:${image.path}:v1`, `docker://${host}/bench/skopeo:v1`]));
  const oursAgain = await measure('transship copy (identical re-push)', async () => (await copy(['--dest-creds', 'alice:alice-pw', `oci:${image.path}:v1`, `docker://${host}/bench/ts:v1`])).r);
  const theirsAgain = await measure('skopeo copy (identical re-push)', () => skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:alice-pw', `oci:${image.path}:v1`, `docker://${host}/bench/skopeo:v1`]));
  console.log(`# into Distribution 2.8 (htpasswd), 3 layers (20 MiB, 1 MiB, 4 KiB) + config:\n#   ${rows.join('\n#   ')}`);
  assert.ok(ours <= theirs, `transship sends no more requests than skopeo (${ours} vs ${theirs})`);
  assert.ok(oursAgain <= theirsAgain, `nor on a re-push (${oursAgain} vs ${theirsAgain})`);
});
