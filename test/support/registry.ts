// Test support for the registry: an in-process server on listen(0), a real `transship serve` child process (the
// compiled CLI, test/support/cli.ts), skopeo and htpasswd (installed with apt-get when missing) and a store snapshot
// for "nothing changed" assertions.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI } from './cli.js';
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pino } from 'pino';
import type { FastifyInstance } from 'fastify';
import { buildServer, type ServerOptions } from '../../packages/transship/src/server/server.js';
import type { RegistryContext } from '../../packages/transship/src/registry/context.js';
import type { BlobStore } from '../../packages/transship/src/store/contract.js';
import type { MetaStore } from '../../packages/transship/src/registry/meta.js';
import { FsStore } from '../../packages/transship/src/store/fs-store.js';
import { StoreMetaStore } from '../../packages/transship/src/registry/meta.js';

const ROOT = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..');

export interface TestRegistry {
  app: FastifyInstance;
  ctx: RegistryContext;
  /** `127.0.0.1:PORT`, for docker:// references. */
  host: string;
  url: string;
  close(): Promise<void>;
}

export async function startTestRegistry(opts: ServerOptions): Promise<TestRegistry> {
  let ctx: RegistryContext | undefined;
  const app = await buildServer({ logger: pino({ level: process.env.TRANSSHIP_TEST_LOG ?? 'silent' }), ...opts, onContext: (c) => (ctx = c) });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as { port: number }).port;
  if (!ctx) throw new Error('registry context not created');
  return { app, ctx, host: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}`, close: () => app.close() };
}

/** A fresh FsStore (and its meta store) in a temp dir; `cleanup` removes it. */
export async function tempFsStore(): Promise<{ dir: string; store: FsStore; meta: StoreMetaStore; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'ts-reg-'));
  const store = new FsStore(dir);
  return { dir, store, meta: new StoreMetaStore(store), cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Everything visible in a store: blobs with sizes, repositories with tags and manifest links, registry links. */
export async function snapshot(store: BlobStore, meta?: MetaStore): Promise<string[]> {
  const out: string[] = [];
  for await (const b of store.listBlobs()) out.push(`blob ${b.digest} ${b.size}`);
  for (const r of await store.listRepos()) {
    for (const t of await store.listTags(r)) out.push(`tag ${r}:${t} ${await store.getTag(r, t)}`);
    for (const m of await store.listManifestLinks(r)) out.push(`manifest ${r}@${m}`);
  }
  if (meta) for (const k of await meta.list('repos/')) out.push(`meta ${k}`);
  return out.sort();
}

/** Every file under a directory (relative paths), for "no leftovers" checks on spools and fs stores. */
export async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(relative(dir, p));
    }
  };
  await walk(dir);
  return out.sort();
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

const installs = new Map<string, Promise<void>>();

/** Installs a Debian package when `binary` is missing (apt-get, waiting for another holder of the lock). */
export async function ensureDebianPackage(binary: string, pkg: string): Promise<void> {
  if (existsSync(binary)) return;
  let ready = installs.get(pkg);
  if (!ready) {
    ready = (async () => {
      const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
      await run('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'update', '-qq'], { env });
      const r = await run('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'install', '-y', '-qq', pkg], { env });
      if (r.code !== 0 || !existsSync(binary)) throw new Error(`apt-get install ${pkg} failed: ${r.stderr}`);
    })();
    installs.set(pkg, ready);
  }
  await ready;
}

export function ensureSkopeo(): Promise<void> {
  return ensureDebianPackage('/usr/bin/skopeo', 'skopeo');
}

/** Apache's htpasswd (apache2-utils), for files made the way operators make them. */
export async function htpasswd(args: string[]): Promise<RunResult> {
  await ensureDebianPackage('/usr/bin/htpasswd', 'apache2-utils');
  return run('/usr/bin/htpasswd', args);
}

/** Runs a command without a shell; never throws on a non-zero exit. `onSpawn` gets the child (to kill it). */
export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; onSpawn?: (c: ChildProcess) => void } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 180_000);
    opts.onSpawn?.(child);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: 127, stdout, stderr: stderr + String(err) });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}

/** skopeo with TLS verification off (our test registry speaks plain HTTP) and a private auth file. */
export async function skopeo(args: string[], opts: { onSpawn?: (c: ChildProcess) => void; timeoutMs?: number } = {}): Promise<RunResult> {
  await ensureSkopeo();
  return run('skopeo', ['--insecure-policy', ...args], { ...opts, env: { ...process.env, REGISTRY_AUTH_FILE: join(tmpdir(), 'transship-test-skopeo-auth.json') } });
}

/** sha256 of every blob file of an OCI layout, by digest (for byte-identical comparisons). */
export async function layoutBlobs(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const f of await readdir(join(dir, 'blobs', 'sha256'))) {
    out.set(`sha256:${f}`, createHash('sha256').update(await readFile(join(dir, 'blobs', 'sha256', f))).digest('hex'));
  }
  return out;
}

export interface ServeProcess {
  child: ChildProcess;
  url: string;
  host: string;
  output(): string;
  /** What the process wrote to stderr alone (logs are JSON lines there). */
  stderr(): string;
  /** SIGTERM, then wait for exit (SIGKILL after 5 s). Returns the exit code. */
  stop(): Promise<number | null>;
}

/** Starts `transship serve` as a child process on a free port; resolves once it printed its URL. */
export async function spawnServe(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<ServeProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', ...args], {
    cwd: ROOT,
    env: { ...env, TRANSSHIP_LOG_LEVEL: env.TRANSSHIP_LOG_LEVEL ?? 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start within 30 s:\n${out}`)), 30_000);
    const onData = (c: Buffer): void => {
      out += c.toString();
      const m = /listening on (https?:\/\/\S+)/.exec(out);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (c: Buffer) => {
      out += c.toString();
      err += c.toString();
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code} before listening:\n${out}`));
    });
  });
  return {
    child,
    url,
    host: url.replace(/^https?:\/\//, ''),
    output: () => out,
    stderr: () => err,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      const code = await exited;
      clearTimeout(killer);
      return code;
    },
  };
}

// ---- inject helpers (unit tests) -----------------------------------------------------------------------------

export interface Injected {
  statusCode: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: string;
  json<T = unknown>(): T;
}

export type Inject = (opts: { method: string; url: string; headers?: Record<string, string>; payload?: string | Buffer | Readable }) => Promise<Injected>;

export function injector(app: FastifyInstance): Inject {
  return async (opts) => {
    const r = await app.inject({ method: opts.method as 'GET', url: opts.url, headers: opts.headers ?? {}, ...(opts.payload !== undefined ? { payload: opts.payload } : {}) });
    return { statusCode: r.statusCode, headers: r.headers, body: r.body, json: <T>() => JSON.parse(r.body) as T };
  };
}

/** The spec error code of an error response. */
export function errorCode(r: Injected): string | undefined {
  try {
    return r.json<{ errors?: Array<{ code?: string }> }>().errors?.[0]?.code;
  } catch {
    return undefined;
  }
}

/** Monolithic blob upload; returns the response. */
export async function uploadBlob(inject: Inject, repo: string, data: Buffer, headers: Record<string, string> = {}): Promise<Injected> {
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  return inject({ method: 'POST', url: `/v2/${repo}/blobs/uploads/?digest=${digest}`, headers: { 'content-type': 'application/octet-stream', ...headers }, payload: data });
}

export interface TestImage {
  config: Buffer;
  layer: Buffer;
  manifest: Buffer;
  manifestDigest: string;
  configDigest: string;
  layerDigest: string;
}

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A small OCI (or Docker schema 2) image: config + one layer + manifest, optionally with a subject. */
export function testImage(seed: string, opts: { docker?: boolean; subject?: { digest: string; size: number; mediaType: string }; artifactType?: string } = {}): TestImage {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }));
  const layer = Buffer.from(`layer bytes of ${seed} `.repeat(50));
  const mt = opts.docker
    ? { m: 'application/vnd.docker.distribution.manifest.v2+json', c: 'application/vnd.docker.container.image.v1+json', l: 'application/vnd.docker.image.rootfs.diff.tar.gzip' }
    : { m: 'application/vnd.oci.image.manifest.v1+json', c: 'application/vnd.oci.image.config.v1+json', l: 'application/vnd.oci.image.layer.v1.tar' };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: mt.m,
      ...(opts.artifactType ? { artifactType: opts.artifactType } : {}),
      config: { mediaType: mt.c, digest: sha(config), size: config.length },
      layers: [{ mediaType: mt.l, digest: sha(layer), size: layer.length }],
      ...(opts.subject ? { subject: opts.subject } : {}),
    }),
  );
  return { config, layer, manifest, manifestDigest: sha(manifest), configDigest: sha(config), layerDigest: sha(layer) };
}

export async function pushImage(inject: Inject, repo: string, ref: string, image: TestImage, headers: Record<string, string> = {}): Promise<Injected> {
  for (const b of [image.config, image.layer]) {
    const r = await uploadBlob(inject, repo, b, headers);
    if (r.statusCode !== 201) throw new Error(`blob upload failed: ${r.statusCode} ${r.body}`);
  }
  const mediaType = (JSON.parse(image.manifest.toString()) as { mediaType: string }).mediaType;
  return inject({ method: 'PUT', url: `/v2/${repo}/manifests/${ref}`, headers: { 'content-type': mediaType, ...headers }, payload: image.manifest });
}

/**
 * The sum of a metric's series on a running server's /metrics. `name` may carry a label set
 * (`metric{label="v"}`) to read that one series.
 */
export async function scrapeMetric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(name.includes('{') ? `${name} ` : `${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}
