// `copy` sources against inputs that used to hurt the process (issue 20 items 9–12): a registry that streams a
// manifest without end, a registry that accepts connections and never answers (or stalls mid-body), a layout with a
// blob missing, and a layout whose blob is a symlink to a FIFO. Each ends promptly with a stable error code.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdtemp, readdir, rm, symlink, unlink } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseReference, type DockerReference } from '../../packages/transship/src/transfer/reference.js';
import { DockerRegistrySource } from '../../packages/transship/src/transfer/sources/docker-registry.js';
import { openOciLayoutSource } from '../../packages/transship/src/transfer/sources/oci-layout.js';
import { MAX_MANIFEST_BYTES } from '../../packages/transship/src/transfer/sources/verify.js';
import { makeOciLayout } from '../support/images.js';
import { CLI, REPO_ROOT } from '../support/cli.js';

const work = await mkdtemp(join(tmpdir(), 'ts-hostile-'));
const servers: Server[] = [];
after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  await rm(work, { recursive: true, force: true });
});

async function listen(handler: Parameters<typeof createServer>[1]): Promise<{ port: number; ref: DockerReference }> {
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return { port, ref: parseReference(`docker://127.0.0.1:${port}/team/app:v1`) as DockerReference };
}

/** The CLI as users run it; resolves with its exit code and stderr. */
function cli(args: string[], timeoutMs = 60_000): Promise<{ code: number | null; stderr: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: REPO_ROOT, env: { ...process.env, TRANSSHIP_CONFIG: '', XDG_CACHE_HOME: join(work, 'cache') } });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, ms: Date.now() - started });
    });
  });
}

test('issue 20 item 9: a docker:// manifest streamed without end is refused at the limit while it is read, not after buffering it', async () => {
  let written = 0;
  const { ref } = await listen((req, res) => {
    res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': `sha256:${'0'.repeat(64)}` });
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    // Endless, but stops at 256 MiB so that a client that buffers everything fails this test instead of hanging it.
    const pump = (): void => {
      while (written < 256 * 1024 * 1024 && !res.destroyed) {
        written += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  });
  await assert.rejects(DockerRegistrySource.open(ref, { retry: { maxAttempts: 1 } }), { code: 'TS_MANIFEST_INVALID' });
  assert.ok(written < MAX_MANIFEST_BYTES + 32 * 1024 * 1024, `the server got to write ${written} bytes before the client hung up`);
});

test('issue 20 item 12: a registry that accepts connections and never answers (or stalls mid-body) is cut off by our timeouts and retried', async () => {
  let requests = 0;
  const silent = await listen(() => void requests++);
  const started = Date.now();
  await assert.rejects(DockerRegistrySource.open(silent.ref, { timeouts: { firstByteMs: 200 }, retry: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 5 } }), (err: { code?: string; cause?: { code?: string } }) => {
    assert.equal(err.code, 'TS_RETRY_EXHAUSTED');
    assert.equal(err.cause?.code, 'TS_TIMEOUT');
    return true;
  });
  assert.equal(requests, 3, 'each attempt timed out and was retried through the one retry');
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);

  let stalls = 0;
  const stalled = await listen((req, res) => {
    // The version check (GET /v2/) is answered too; what is counted is the manifest attempts.
    if (req.url?.includes('/manifests/')) stalls++;
    res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': '1000' });
    res.write('{"schemaVersion": 2,');
  });
  await assert.rejects(DockerRegistrySource.open(stalled.ref, { timeouts: { idleMs: 200 }, retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 5 } }), (err: { code?: string; cause?: { code?: string } }) => {
    assert.equal(err.code, 'TS_RETRY_EXHAUSTED');
    assert.equal(err.cause?.code, 'TS_TIMEOUT');
    return true;
  });
  assert.equal(stalls, 2);
});

test('issue 20 item 10: copy oci:LAYOUT dir:… with a layer blob missing fails with TS_BLOB_UNKNOWN, no unhandled error (3 runs)', async () => {
  const image = await makeOciLayout(join(work, 'missing'), { tag: 'v1', seed: 'missing', multiArch: true });
  await unlink(join(image.path, 'blobs', 'sha256', image.layers[0]!.digest.slice(7)));
  for (let i = 0; i < 3; i++) {
    const r = await cli(['copy', `oci:${image.path}:v1`, `dir:${join(work, `out-${i}`)}/app:v1`]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /TS_BLOB_UNKNOWN/);
    assert.doesNotMatch(r.stderr, /Unhandled|node:events|AbortError/);
  }
});

test('issue 20 item 11: a layout blob that is a symlink to a FIFO is refused at once (TS_LAYOUT_INVALID), never opened', async (t) => {
  if (spawnSync('mkfifo', ['--version']).status !== 0) return t.skip('mkfifo not available');
  const image = await makeOciLayout(join(work, 'fifo'), { tag: 'v1', seed: 'fifo' });
  const layer = join(image.path, 'blobs', 'sha256', image.layers[0]!.digest.slice(7));
  const fifo = join(work, 'a-fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  await unlink(layer);
  await symlink(fifo, layer);
  const src = await openOciLayoutSource(image.path, { tag: 'v1' });
  await assert.rejects(src.blob(image.layers[0]!), { code: 'TS_LAYOUT_INVALID' });
  await src.close();
  const r = await cli(['copy', `oci:${image.path}:v1`, `dir:${join(work, 'fifo-out')}/app:v1`], 20_000);
  assert.equal(r.code, 1, `copy ended (${r.ms} ms): ${r.stderr}`);
  assert.match(r.stderr, /TS_LAYOUT_INVALID/);
  assert.deepEqual(await readdir(join(work, 'fifo-out', 'blobs', 'sha256')).catch(() => []).then((f) => f.filter((n) => n === image.layers[0]!.digest.slice(7))), [], 'the FIFO was never copied');
});
