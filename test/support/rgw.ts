// Design note: the S3 the tests talk to is a real Ceph RGW, not a mock, because the project relies on exact RGW
// behaviour (412 on `If-None-Match: *` PutObject, none on CompleteMultipartUpload, Content-MD5 checks, …).
// Each call builds a throw-away single-node cluster on 127.0.0.1: one monitor, one memstore OSD (data lives in
// the OSD's memory, so nothing survives and nothing touches a disk image), and N radosgw daemons sharing that
// cluster, each on its own port — the "regions" of the placement tests. Everything lives in a fresh temp dir and
// every daemon is a child process whose pid we hold, so `stop()` ends exactly what this call started even when
// other clusters run on the same machine. Facts behind the configuration: ../../../shared/notes/ceph-rgw.md.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { constants, closeSync, openSync, readFileSync } from 'node:fs';
import { access, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';

export interface RgwOptions {
  /** Number of radosgw daemons sharing the cluster (default 1). */
  gateways?: number;
  /** Gives up on the whole startup (default 120 s; a cold `apt-get install` comes on top). */
  timeoutMs?: number;
  /** Memory the memstore OSD may fill (default 5 GiB: benchmarks upload ~1.5 GiB, RGW adds overhead). */
  memstoreBytes?: number;
  signal?: AbortSignal;
  /** Progress lines (phase timings); silent by default. */
  log?: (line: string) => void;
}

export interface Rgw {
  env: Record<string, string>;
  endpoints: string[];
  accessKeyId: string;
  secretAccessKey: string;
  /** The temp dir holding config, logs and sockets (gone after stop()). */
  dir: string;
  stop(): Promise<void>;
}

export interface S3TestConfig {
  endpoint: string;
  endpoints: string[];
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
}

// Fixed keys: radosgw-admin accepts them, and a human reading a failing test's log can reuse them by hand.
const ACCESS_KEY = 'TRANSSHIPTESTACCESS0';
const SECRET_KEY = 'transship-test-secret-key-not-a-secret-0';
const REGION = 'us-east-1';
const REQUIRED_BINARIES = ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'monmaptool', 'ceph'];
const CEPH_PACKAGES = ['ceph-mon', 'ceph-osd', 'ceph-mgr', 'radosgw'];
const STOP_GRACE_MS = 3000;
const LOG_TAIL_BYTES = 4000;

export async function startRgw(opts: RgwOptions = {}): Promise<Rgw> {
  const gateways = opts.gateways ?? 1;
  if (!Number.isInteger(gateways) || gateways < 1 || gateways > 16) {
    throw new RangeError(`startRgw: gateways must be an integer in 1..16, got ${String(gateways)}`);
  }
  const log = opts.log ?? (() => {});
  const t0 = Date.now();
  const phase = (what: string) => log(`rgw: ${what} (+${((Date.now() - t0) / 1000).toFixed(1)} s)`);

  await ensureCephInstalled(opts.signal, log);
  phase('packages present');

  // The deadline starts after installation: a cold install (~25 s) should not eat the cluster's time budget.
  const timeout = AbortSignal.timeout(opts.timeoutMs ?? 120_000);
  // Aborted when startup fails, so no poll loop or tool outlives the failed attempt.
  const giveUp = new AbortController();
  const signal = AbortSignal.any([giveUp.signal, timeout, ...(opts.signal ? [opts.signal] : [])]);

  const dir = await mkdtemp(join(tmpdir(), 'transship-rgw-'));
  const cluster = new Cluster(dir);
  try {
    const [monPort, ...rgwPorts] = await freePorts(1 + gateways);
    if (monPort === undefined) throw new Error('no free port');
    const names = rgwPorts.map((_, i) => `client.rgw.g${i}`);
    await cluster.configure(monPort, names, rgwPorts, opts.memstoreBytes ?? 5 * 1024 ** 3);

    await cluster.run('monmaptool', ['--create', '--addv', 'a', `[v1:127.0.0.1:${monPort}]`, '--fsid', cluster.fsid, cluster.monmap], signal);
    await cluster.run('ceph-mon', ['-c', cluster.conf, '--mkfs', '-i', 'a', '--monmap', cluster.monmap], signal);
    cluster.daemon('mon.a', 'ceph-mon', ['-f', '-c', cluster.conf, '-i', 'a']);
    phase('monitor started');

    const osdUuid = randomUUID();
    // `osd create` is the first monitor command, so it also waits for the monitor to answer.
    const osdId = (await cluster.run('ceph', ['-c', cluster.conf, '--connect-timeout', '60', 'osd', 'create', osdUuid], signal)).trim();
    if (osdId !== '0') throw new Error(`expected osd id 0 from a fresh cluster, got ${JSON.stringify(osdId)}`);
    await cluster.run('ceph-osd', ['-c', cluster.conf, '--mkfs', '-i', '0', '--osd-uuid', osdUuid], signal);
    await cluster.run('ceph', ['-c', cluster.conf, 'osd', 'crush', 'add', 'osd.0', '1.0', 'host=localhost', 'root=default'], signal);
    cluster.daemon('osd.0', 'ceph-osd', ['-f', '-c', cluster.conf, '-i', '0']);
    phase('osd started');

    // radosgw-admin creates the default realm/zonegroup/zone and the RGW pools before any gateway starts, so the
    // gateways (started together) find them and do not race each other creating them.
    await cluster.run(
      'radosgw-admin',
      ['-c', cluster.conf, 'user', 'create', '--uid=transship', '--display-name=transship tests', `--access-key=${ACCESS_KEY}`, `--secret=${SECRET_KEY}`],
      signal,
    );
    phase('user created');

    const endpoints = rgwPorts.map((p) => `http://127.0.0.1:${p}`);
    names.forEach((name) => cluster.daemon(name, 'radosgw', ['-f', '-c', cluster.conf, '-n', name]));
    await Promise.race([Promise.all(names.map((name, i) => cluster.waitForHttp(name, endpoints[i] ?? '', signal))), cluster.died]);
    phase(`${gateways} gateway(s) answering`);

    const env: Record<string, string> = {
      TRANSSHIP_TEST_S3_ENDPOINT: endpoints[0] ?? '',
      TRANSSHIP_TEST_S3_ENDPOINTS: endpoints.join(','),
      TRANSSHIP_TEST_S3_ACCESS_KEY: ACCESS_KEY,
      TRANSSHIP_TEST_S3_SECRET_KEY: SECRET_KEY,
      TRANSSHIP_TEST_S3_REGION: REGION,
    };
    let stopping: Promise<void> | undefined;
    return { env, endpoints, accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY, dir, stop: () => (stopping ??= cluster.destroy()) };
  } catch (err) {
    giveUp.abort(err);
    await cluster.destroy();
    throw err;
  }
}

/** The test S3 handed over by the test runner through the environment, or undefined outside it. */
export function s3TestConfig(env: NodeJS.ProcessEnv = process.env): S3TestConfig | undefined {
  const endpoint = env.TRANSSHIP_TEST_S3_ENDPOINT;
  const accessKeyId = env.TRANSSHIP_TEST_S3_ACCESS_KEY;
  const secretAccessKey = env.TRANSSHIP_TEST_S3_SECRET_KEY;
  if (!endpoint || !accessKeyId || !secretAccessKey) return undefined;
  const endpoints = (env.TRANSSHIP_TEST_S3_ENDPOINTS ?? endpoint).split(',').filter(Boolean);
  return { endpoint, endpoints, accessKeyId, secretAccessKey, region: env.TRANSSHIP_TEST_S3_REGION || REGION };
}

/**
 * An S3 client for the test bed, configured like the project's: path-style, SDK retries off (tests and the retry
 * module must see every answer). `overrides` win, e.g. `{ requestChecksumCalculation: 'WHEN_REQUIRED' }`, which
 * streamed bodies need on RGW 16 (see the rgw-testbed test on MissingContentLength).
 */
export function testS3Client(endpoint?: string, overrides: Partial<S3ClientConfig> = {}): S3Client {
  const config = s3TestConfig();
  if (!config) throw new Error('no test S3: run through `node test/run.mjs` (TRANSSHIP_TEST_S3_* unset)');
  return new S3Client({
    endpoint: endpoint ?? config.endpoint,
    region: config.region,
    credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey },
    forcePathStyle: true,
    maxAttempts: 1,
    ...overrides,
  });
}

let bucketCounter = 0;

/**
 * Creates a bucket with a name no other test (or earlier run against the same cluster) uses and returns it.
 * All gateways share one bucket namespace, so the name is unique across "regions" too.
 */
export async function createTestBucket(name?: string, endpoint?: string): Promise<string> {
  const base = (name ?? 'test').toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '').slice(0, 30) || 'test';
  const unique = `${base}-${process.pid}-${Date.now().toString(36)}-${(bucketCounter++).toString(36)}`;
  const client = testS3Client(endpoint);
  try {
    await client.send(new CreateBucketCommand({ Bucket: unique }));
  } finally {
    client.destroy();
  }
  return unique;
}

// ---- packages ----------------------------------------------------------------------------------------------

let installing: Promise<void> | undefined;

async function ensureCephInstalled(signal: AbortSignal | undefined, log: (line: string) => void): Promise<void> {
  const missing = await missingBinaries();
  if (missing.length === 0) return;
  // One install per process, whoever asks first; apt's own lock timeout covers other processes.
  installing ??= installCeph(missing, log).finally(() => (installing = undefined));
  await abortable(installing, signal);
  const still = await missingBinaries();
  if (still.length) throw new Error(`Ceph binaries still missing after apt-get install: ${still.join(', ')}`);
}

async function installCeph(missing: string[], log: (line: string) => void): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new Error(`Ceph binaries missing (${missing.join(', ')}) and not root: apt-get install ${CEPH_PACKAGES.join(' ')}`);
  }
  log(`rgw: installing ${CEPH_PACKAGES.join(' ')} (missing ${missing.join(', ')})`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const lock = ['-o', 'DPkg::Lock::Timeout=300'];
  await runTool('apt-get', [...lock, 'update'], { env });
  await runTool('apt-get', [...lock, 'install', '-y', '--no-install-recommends', ...CEPH_PACKAGES], { env });
}

async function missingBinaries(): Promise<string[]> {
  const dirs = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter).concat('/usr/bin', '/usr/sbin');
  const missing: string[] = [];
  for (const bin of REQUIRED_BINARIES) {
    let found = false;
    for (const d of dirs) {
      if (await access(join(d, bin), constants.X_OK).then(() => true, () => false)) {
        found = true;
        break;
      }
    }
    if (!found) missing.push(bin);
  }
  return missing;
}

// ---- the cluster -------------------------------------------------------------------------------------------

interface Daemon {
  name: string;
  child: ChildProcess;
  logFile: string;
  exited: Promise<void>;
  exit?: string;
}

class Cluster {
  readonly fsid = randomUUID();
  readonly conf: string;
  readonly monmap: string;
  private readonly daemons: Daemon[] = [];
  private stopping = false;
  private onDeath: (err: Error) => void = () => {};
  /** Rejects as soon as a daemon exits on its own: every startup step races it instead of waiting for a timeout. */
  readonly died = new Promise<never>((_, reject) => {
    this.onDeath = reject;
  });
  private readonly killOnExit = () => {
    // The runner died without stop(): do not leave a cluster holding GBs of memory behind.
    for (const d of this.daemons) if (d.exit === undefined) d.child.kill('SIGKILL');
  };

  constructor(readonly dir: string) {
    this.conf = join(dir, 'ceph.conf');
    this.monmap = join(dir, 'monmap');
    process.once('exit', this.killOnExit);
    this.died.catch(() => {}); // Observed through the races; nobody may be racing it when a daemon dies.
  }

  logFile(name: string): string {
    return join(this.dir, 'log', `${name}.log`);
  }

  async configure(monPort: number, rgwNames: string[], rgwPorts: number[], memstoreBytes: number): Promise<void> {
    const d = this.dir;
    await Promise.all(['log', 'run', 'mon/ceph-a', 'osd/ceph-0', 'rgw', 'crash'].map((p) => mkdir(join(d, p), { recursive: true })));
    const lines = [
      '[global]',
      `fsid = ${this.fsid}`,
      // A v1 address on a custom port: radosgw cannot authenticate against a v2 address on a non-default port.
      `mon host = [v1:127.0.0.1:${monPort}]`,
      'mon initial members = a',
      'ms bind msgr2 = false',
      // Without these the OSD binds 0.0.0.0.
      'public addr = 127.0.0.1',
      'public network = 127.0.0.0/8',
      'auth cluster required = none',
      'auth service required = none',
      'auth client required = none',
      `keyring = ${join(d, 'keyring')}`,
      'osd pool default size = 1',
      'osd pool default min size = 1',
      'mon allow pool size one = true',
      'mon warn on pool no redundancy = false',
      'osd crush chooseleaf type = 0',
      // We place osd.0 in the CRUSH map ourselves. Left on, the OSD sends its own CRUSH commands at boot, and now
      // and then sends them before it has the monmap: the monitor answers "wrong fsid" and the OSD exits.
      'osd crush update on start = false',
      'osd class update on start = false',
      'osd objectstore = memstore',
      `memstore device bytes = ${memstoreBytes}`,
      // Small, fixed PG counts: fewer PGs to create and peer per pool means faster pool creation.
      'osd pool default pg autoscale mode = off',
      'osd pool default pg num = 8',
      'osd pool default pgp num = 8',
      'rgw rados pool pg num min = 8',
      // The monitor batches map changes for up to a second; RGW creates its pools one after another, so a short
      // interval is most of the startup time saved.
      'paxos propose interval = 0.1',
      'paxos min wait = 0.01',
      `run dir = ${join(d, 'run')}`,
      `crash dir = ${join(d, 'crash')}`,
      `log file = ${join(d, 'log', '$name.log')}`,
      `admin socket = ${join(d, 'run', '$name.asok')}`,
      `pid file = ${join(d, 'run', '$name.pid')}`,
      `mon data = ${join(d, 'mon', '$cluster-$id')}`,
      `osd data = ${join(d, 'osd', '$cluster-$id')}`,
      '',
      '[client]',
      // Fail in a minute, not the default five, when a gateway cannot reach the cluster.
      'rgw init timeout = 60',
      'rgw enable apis = s3, admin',
      // Beast's 512 default threads per gateway only cost startup time and memory in tests.
      'rgw thread pool size = 64',
      'rgw dynamic resharding = false',
      // Overwritten and deleted objects keep their data in the memstore until garbage collection, which by default
      // waits 2 h and runs hourly: long benchmark runs would fill the OSD's memory with dead bytes.
      'rgw gc obj min wait = 60',
      'rgw gc processor period = 30',
      // The lifecycle worker makes a gateway take ~5 s to exit on SIGTERM; tests never wait a day for expiry anyway.
      'rgw enable lc threads = false',
      `rgw data = ${join(d, 'rgw', '$name')}`,
      '',
    ];
    rgwNames.forEach((name, i) => {
      // Only `endpoint=`: adding `port=` too makes beast bind twice and exit with "Address already in use".
      lines.push(`[${name}]`, `rgw frontends = beast endpoint=127.0.0.1:${rgwPorts[i]}`, '');
    });
    await writeFile(this.conf, lines.join('\n'));
    await writeFile(join(d, 'keyring'), '');
  }

  /** Runs a short-lived Ceph tool; its output goes to log/tools.log and the error carries its tail. */
  async run(cmd: string, args: string[], signal: AbortSignal): Promise<string> {
    try {
      return await Promise.race([runTool(cmd, args, { signal, logFile: this.logFile('tools') }), this.died]);
    } catch (err) {
      // A tool that hangs or fails usually does so because a daemon is unwell: show what they said last.
      const tails = this.daemons.map((d) => this.tail(d.name, 1500)).join('\n');
      throw new Error(`${errorMessage(err)}\n${tails}`, { cause: err });
    }
  }

  daemon(name: string, cmd: string, args: string[]): void {
    const logFile = this.logFile(name);
    // stdout/stderr go next to the daemon's own log: crashes before logging starts end up there.
    const fd = openSync(`${logFile}.stderr`, 'a');
    let child: ChildProcess;
    try {
      child = spawn(cmd, args, { stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    const daemon: Daemon = {
      name,
      child,
      logFile,
      exited: new Promise<void>((resolve) => {
        const exited = (why: string) => {
          daemon.exit ??= why;
          if (!this.stopping) this.onDeath(new Error(`${name} exited during startup (${why})\n${this.tail(name)}`));
          resolve();
        };
        child.once('exit', (code, sig) => exited(sig ?? `exit code ${code}`));
        child.once('error', (err) => exited(err.message));
      }),
    };
    this.daemons.push(daemon);
  }

  async waitForHttp(name: string, url: string, signal: AbortSignal): Promise<void> {
    for (;;) {
      if (signal.aborted) {
        throw new Error(`${name} did not answer on ${url}: ${errorMessage(signal.reason)}\n${this.tail(name)}`, { cause: signal.reason });
      }
      if (await httpAnswers(url, signal)) return;
      await sleep(200, undefined, { signal }).catch(() => {});
    }
  }

  tail(name: string, bytes = LOG_TAIL_BYTES): string {
    const parts: string[] = [];
    for (const file of [this.logFile(name), `${this.logFile(name)}.stderr`]) {
      try {
        const text = readFileSync(file, 'utf8');
        if (text.trim()) parts.push(`--- tail of ${file} ---\n${text.slice(-bytes)}`);
      } catch {
        // Not written yet: the other file may say why.
      }
    }
    return parts.join('\n') || `(no log output from ${name})`;
  }

  /** Ends every daemon this cluster started (and nothing else), then removes the temp dir. */
  async destroy(): Promise<void> {
    this.stopping = true;
    // In stages — gateways, then the OSD, then the monitor: a gateway or OSD whose monitor is already gone spends
    // its whole grace period trying to say goodbye to it.
    const stage = (d: Daemon) => (d.name.startsWith('client.') ? 0 : d.name.startsWith('osd.') ? 1 : 2);
    for (const n of [0, 1, 2]) {
      const running = this.daemons.filter((d) => stage(d) === n && d.exit === undefined);
      for (const d of running) d.child.kill('SIGTERM');
      const all = Promise.all(running.map((d) => d.exited));
      await abortable(all, AbortSignal.timeout(STOP_GRACE_MS)).catch(() => {
        for (const d of running) if (d.exit === undefined) d.child.kill('SIGKILL');
      });
      await all;
    }
    process.removeListener('exit', this.killOnExit);
    await rm(this.dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

// ---- small helpers -----------------------------------------------------------------------------------------

/** Distinct free loopback ports: all are held open together so the kernel cannot hand out one twice. */
async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
      });
    }
    return servers.map((s) => {
      const addr = s.address();
      if (addr === null || typeof addr === 'string') throw new Error('listen(0) gave no port');
      return addr.port;
    });
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

function httpAnswers(url: string, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(url, { method: 'GET', signal, timeout: 2000, agent: false }, (res) => {
      res.resume();
      resolve(true);
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(false));
    req.end();
  });
}

interface RunOptions {
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  /** Appends the tool's command line and output here too. */
  logFile?: string;
}

/** Runs a command to completion; resolves with stdout, rejects with a message carrying its output's tail. */
function runTool(cmd: string, args: string[], opts: RunOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], signal: opts.signal });
    let stdout = '';
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      output = (output + s).slice(-LOG_TAIL_BYTES);
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      output = (output + s).slice(-LOG_TAIL_BYTES);
    });
    const finish = (err: Error | undefined) => {
      if (opts.logFile) {
        void writeFile(opts.logFile, `$ ${cmd} ${args.join(' ')}\n${output}\n`, { flag: 'a' }).catch(() => {});
      }
      if (err) reject(err);
      else resolve(stdout);
    };
    child.once('error', (err) => {
      const why = opts.signal?.aborted ? `stopped: ${errorMessage(opts.signal.reason)}` : `failed to run: ${err.message}`;
      finish(new Error(`${cmd} ${args.join(' ')} ${why}\n${output}`, { cause: err }));
    });
    child.once('close', (code, sig) => {
      if (code === 0) finish(undefined);
      else finish(new Error(`${cmd} ${args.join(' ')} failed (${sig ?? `exit code ${code}`}):\n${output}`));
    });
  });
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Awaits `p` but gives up when `signal` aborts (the work itself goes on: callers clean it up). */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
    signal.addEventListener('abort', onAbort, { once: true });
    void p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Requests a store (anything with the S3 store's requestCounts()) sent while `fn` ran, by operation. */
export async function requestsDuring(store: { requestCounts(): Record<string, number> }, fn: () => Promise<void>): Promise<Record<string, number>> {
  const before = store.requestCounts();
  await fn();
  const out: Record<string, number> = {};
  for (const [op, n] of Object.entries(store.requestCounts())) if (n !== (before[op] ?? 0)) out[op] = n - (before[op] ?? 0);
  return out;
}
