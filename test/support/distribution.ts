// Design note: the peer registry for benchmarks (and any test that wants one) is Distribution 2.8 from Debian's
// `docker-registry` package, with its `s3` storage driver on whatever S3 endpoint the caller gives — usually the
// counting proxy in front of the test RGW, so both registries are measured by the same counter.
//
// Facts behind the configuration (Distribution 2.8.2+ds1 on Debian 12):
// - 2.8's s3 driver has no `forcepathstyle` key: it uses path-style URLs whenever `regionendpoint` is set (the key
//   arrived in v3). `secure: false` makes it speak plain HTTP to the endpoint; `v4auth: true` signs with SigV4, which
//   RGW needs. The signature covers the Host header, so a proxy in between must forward Host unchanged.
// - The bucket must exist before the first push (the driver never creates it).
// - `AWS_CA_BUNDLE` in the environment makes it panic at start ("LoadCustomCABundleError"); we pass a minimal
//   environment without any AWS_* variable, so the config file is the only source of credentials and endpoint.
// - Background S3 traffic that would pollute request counts is switched off: the storage health check (a
//   `health.storagedriver` section) is simply not configured, and upload purging (`maintenance.uploadpurging`, a
//   walk of `_uploads` some minutes after start) is disabled.
// - `redirect.disable: true` by default: Distribution then serves blob bytes itself instead of answering GETs with a
//   307 to a presigned S3 URL, which is what transship serve does too (a fair pull comparison). Pass
//   `redirect: true` to measure the redirecting setup.
// - The driver's defaults otherwise: 10 MiB `chunksize` (multipart part size while a blob is uploaded), and on
//   commit the blob is "moved" from `_uploads/…/data` to `blobs/…` with a server-side copy (UploadPartCopy above
//   32 MiB `multipartcopythresholdsize`), i.e. every byte is written twice inside S3.
// Everything lives in a fresh temp dir; `stop()` ends only the process this call started.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, openSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const DISTRIBUTION_BINARY = '/usr/bin/docker-registry';
const PACKAGE = 'docker-registry';
const STOP_GRACE_MS = 5000;

export interface DistributionS3 {
  /** S3 endpoint URL, e.g. the counting proxy's `http://127.0.0.1:PORT`. */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Must already exist. */
  bucket: string;
  /** Signing region (default us-east-1). */
  region?: string;
  /** Key prefix inside the bucket (Distribution's `rootdirectory`; default: the bucket root). */
  rootDirectory?: string;
}

export interface DistributionOptions {
  /** S3 storage; without it, the `filesystem` driver in the instance's temp dir (mirror tests: an upstream). */
  s3?: DistributionS3 | undefined;
  /** Pull-through cache of this registry URL (Distribution's proxy mode, `proxy.remoteurl`). */
  proxyRemoteUrl?: string | undefined;
  /** Answer blob GETs with a redirect to a presigned S3 URL (Distribution's default); default false. */
  redirect?: boolean;
  /** Blob descriptor cache: `inmemory` (the packaged default) or none. Default `inmemory`. */
  cache?: 'inmemory' | 'none';
  /** htpasswd (bcrypt) file: Basic auth on every request, as `auth.htpasswd` configures it. */
  htpasswd?: string;
  /** `http.secret` (signs upload state): the same on several instances lets an upload continue on any of them. */
  httpSecret?: string;
  /** Gives up on startup after this long (default 30 s; an `apt-get install` comes on top). */
  timeoutMs?: number;
  signal?: AbortSignal;
  log?: (line: string) => void;
}

export interface Distribution {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** `127.0.0.1:PORT`, for `docker://HOST/…` references. */
  host: string;
  port: number;
  dir: string;
  /** The registry's own log (stderr). */
  logFile: string;
  pid: number;
  stop(): Promise<void>;
}

/** Installs Debian's docker-registry when it is missing (root only); throws with the reason when it cannot. */
export function ensureDistributionInstalled(log: (line: string) => void = () => {}): string {
  if (isExecutable(DISTRIBUTION_BINARY)) return DISTRIBUTION_BINARY;
  if (process.getuid?.() !== 0) throw new Error(`${DISTRIBUTION_BINARY} missing and not root: apt-get install ${PACKAGE}`);
  log(`distribution: installing ${PACKAGE}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => spawnSync('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'install', '-y', '--no-install-recommends', PACKAGE], { env, encoding: 'utf8' });
  let r = install();
  if (r.status !== 0) {
    // A machine that never ran `apt-get update` has no package lists yet.
    spawnSync('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'update'], { env, stdio: 'ignore' });
    r = install();
  }
  if (r.status !== 0 || !isExecutable(DISTRIBUTION_BINARY)) throw new Error(`apt-get install ${PACKAGE} failed:\n${(r.stderr ?? '').slice(-2000)}`);
  return DISTRIBUTION_BINARY;
}

/** `2.8.2+ds1`, or undefined when not installed. */
export function distributionVersion(): string | undefined {
  if (!isExecutable(DISTRIBUTION_BINARY)) return undefined;
  const r = spawnSync(DISTRIBUTION_BINARY, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? (r.stdout.trim().split(/\s+/).at(-1) ?? r.stdout.trim()) : undefined;
}

/** The Distribution configuration for `opts` (exported for tests and for the benchmark report). */
export function distributionConfig(opts: DistributionOptions, port: number, dir = ''): Record<string, unknown> {
  const s3 = opts.s3;
  const driver = s3
    ? {
      s3: {
        accesskey: s3.accessKeyId,
        secretkey: s3.secretAccessKey,
        region: s3.region ?? 'us-east-1',
        // Path-style addressing follows from regionendpoint in 2.8 (there is no forcepathstyle key yet).
        regionendpoint: s3.endpoint,
        bucket: s3.bucket,
        secure: s3.endpoint.startsWith('https:'),
        v4auth: true,
        encrypt: false,
        rootdirectory: s3.rootDirectory ?? '',
      },
    }
    : { filesystem: { rootdirectory: join(dir, 'storage') } };
  return {
    version: 0.1,
    log: { level: 'warn', formatter: 'text', accesslog: { disabled: true } },
    ...(opts.proxyRemoteUrl ? { proxy: { remoteurl: opts.proxyRemoteUrl } } : {}),
    storage: {
      ...driver,
      ...(opts.cache === 'none' ? {} : { cache: { blobdescriptor: 'inmemory' } }),
      redirect: { disable: opts.redirect !== true },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false }, readonly: { enabled: false } },
    },
    ...(opts.htpasswd ? { auth: { htpasswd: { realm: 'transship-test', path: opts.htpasswd } } } : {}),
    http: { addr: `127.0.0.1:${port}`, secret: opts.httpSecret ?? randomBytes(16).toString('hex'), headers: { 'X-Content-Type-Options': ['nosniff'] } },
  };
}

export async function startDistribution(opts: DistributionOptions): Promise<Distribution> {
  const log = opts.log ?? (() => {});
  const binary = ensureDistributionInstalled(log);
  const dir = await mkdtemp(join(tmpdir(), 'transship-distribution-'));
  const logFile = join(dir, 'registry.log');
  const configFile = join(dir, 'config.yml');
  let child: ChildProcess | undefined;
  let exitInfo: string | undefined;
  let exited: Promise<void> = Promise.resolve();
  const stopChild = async (): Promise<void> => {
    if (child && exitInfo === undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child?.kill('SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    }
  };
  try {
    const port = await freePort();
    // JSON is YAML: no YAML writer needed, and no quoting surprises in keys or secrets.
    await writeFile(configFile, JSON.stringify(distributionConfig(opts, port, dir), null, 2));
    const fd = openSync(logFile, 'a');
    try {
      child = spawn(binary, ['serve', configFile], { cwd: dir, env: registryEnv(), stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    const c = child;
    exited = new Promise<void>((resolve) => {
      c.once('exit', (code, sig) => {
        exitInfo = sig ?? `exit code ${code}`;
        resolve();
      });
      c.once('error', (err) => {
        exitInfo = err.message;
        resolve();
      });
    });
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
    for (;;) {
      opts.signal?.throwIfAborted();
      if (exitInfo !== undefined) throw new Error(`docker-registry exited during startup (${exitInfo})\n${tail(logFile)}`);
      const status = await httpStatus(`${url}/v2/`);
      if (status === 200 || (opts.htpasswd && status === 401)) break;
      if (Date.now() > deadline) throw new Error(`docker-registry did not answer on ${url}/v2/ in time\n${tail(logFile)}`);
      await sleep(100);
    }
    log(`distribution: listening on ${url} (pid ${c.pid}, ${opts.s3 ? `s3 ${opts.s3.endpoint}/${opts.s3.bucket}` : 'filesystem'}${opts.proxyRemoteUrl ? `, proxy of ${opts.proxyRemoteUrl}` : ''})`);
    let stopping: Promise<void> | undefined;
    return {
      url,
      host: `127.0.0.1:${port}`,
      port,
      dir,
      logFile,
      pid: c.pid ?? -1,
      stop: () =>
        (stopping ??= (async () => {
          await stopChild();
          if (!process.env.KEEP) await rm(dir, { recursive: true, force: true });
        })()),
    };
  } catch (err) {
    await stopChild();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** A minimal environment: no AWS_* variable (AWS_CA_BUNDLE makes 2.8 panic; the others would override the config). */
function registryEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('AWS_') || k.startsWith('REGISTRY_')) continue;
    env[k] = v;
  }
  return env;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function tail(file: string, bytes = 3000): string {
  try {
    return `--- tail of ${file} ---\n${readFileSync(file, 'utf8').slice(-bytes)}`;
  } catch {
    return `(no log at ${file})`;
  }
}

/** A free loopback port (listen(0), then close). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (addr === null || typeof addr === 'string') throw new Error('listen(0) gave no port');
  return addr.port;
}

/** The status of a GET, or undefined when nothing answers within 2 s. */
export function httpStatus(url: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = request(url, { method: 'GET', timeout: 2000, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(undefined));
    req.end();
  });
}
