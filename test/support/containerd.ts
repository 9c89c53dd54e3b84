// A private containerd for integration tests: its own root, state (on a private tmpfs, like /run on a real node, so a
// restarted containerd does not spend 100 s re-dialling dead shims) and gRPC socket under one temp dir.
//
// Several instances may share this host (other test files, other engineers, the system's own): everything here is
// scoped to what this instance created. Its containers live in a namespace unique to the instance, so cgroups
// (`/<ns>/<id>`) and runc state (`/run/containerd/runc/<ns>/<id>`) never collide with anyone else's; its shims are
// found by their `-address <our socket>` argument; the shim sockets it removes from the shared /run/containerd/s/ are
// only the ones named by the hash of its own address.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile, readlink, rmdir, stat, copyFile, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const IMAGE = 'docker.io/transship/busybox:test';
export const SHIM_SOCKET_DIR = '/run/containerd/s';

export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface TestContainerd {
  dir: string;
  address: string;
  root: string;
  state: string;
  namespace: string;
  /** Runs `ctr --address <ours> -n <ns> …args`; never throws on a non-zero exit. */
  ctr(args: string[], opts?: { namespace?: string; timeoutMs?: number }): Promise<CtrResult>;
  /** `ctr run -d` of a long sleeping busybox; throws when ctr fails. */
  runContainer(id: string, opts?: { namespace?: string }): Promise<number>;
  /** The init pid of a running task, from `ctr task ls`. */
  taskPid(id: string, opts?: { namespace?: string }): Promise<number | undefined>;
  taskStatus(id: string, opts?: { namespace?: string }): Promise<string | undefined>;
  /** Pid of the shim serving (ns, id) of this instance, from /proc cmdlines. */
  shimPid(id: string, opts?: { namespace?: string }): Promise<number | undefined>;
  /** Pids of every run of the shim binary for (ns, id) of this instance: the serving shim and `shim start`/`delete`. */
  shimRuns(id: string, opts?: { namespace?: string }): Promise<number[]>;
  shimSocket(id: string, opts?: { namespace?: string }): string;
  bundleDir(id: string, opts?: { namespace?: string }): string;
  /** SIGKILL containerd (shims survive, as on a real node). */
  kill9(): Promise<void>;
  /** Starts containerd again on the same config (after kill9). */
  restart(): Promise<void>;
  /** Records a path under /run/containerd/s/ that a test made, so stop() removes it. */
  trackSocket(path: string): void;
  stop(): Promise<void>;
}

export async function ensurePackages(): Promise<void> {
  const need: string[] = [];
  if (!existsSync('/usr/bin/containerd')) need.push('containerd');
  if (!existsSync('/usr/sbin/runc') && !existsSync('/usr/bin/runc')) need.push('runc');
  if (!existsSync('/bin/busybox') || !(await isStatic('/bin/busybox'))) need.push('busybox-static');
  if (need.length === 0) return;
  await run('apt-get', ['update', '-qq'], { timeout: 300_000 }).catch(() => undefined);
  await run('apt-get', ['install', '-y', '-qq', ...need], { timeout: 600_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

async function isStatic(path: string): Promise<boolean> {
  // A dynamically linked busybox in a rootfs with no libc would not start; the ELF has a PT_INTERP only when dynamic.
  const buf = await readFile(path);
  return !buf.includes(Buffer.from('/lib64/ld-linux'));
}

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Builds an OCI-layout tar with one layer: /bin/busybox plus the applet symlinks a test needs. */
async function buildImage(dir: string): Promise<string> {
  const rootfs = join(dir, 'rootfs');
  await mkdir(join(rootfs, 'bin'), { recursive: true });
  for (const d of ['proc', 'sys', 'dev', 'tmp', 'etc']) await mkdir(join(rootfs, d), { recursive: true });
  await copyFile('/bin/busybox', join(rootfs, 'bin', 'busybox'));
  for (const applet of ['sh', 'sleep', 'ls', 'cat', 'echo', 'true', 'nc', 'ps', 'kill']) await symlink('busybox', join(rootfs, 'bin', applet));
  const layout = join(dir, 'layout');
  const blobs = join(layout, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const layerTar = join(dir, 'layer.tar');
  await run('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', layerTar, '.']);
  const layer = await readFile(layerTar);
  const layerDigest = sha256(layer);
  await writeFile(join(blobs, layerDigest), layer);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/bin'], Cmd: ['sh'] },
      rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] },
    }),
  );
  const configDigest = sha256(config);
  await writeFile(join(blobs, configDigest), config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${configDigest}`, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerDigest}`, size: layer.length }],
    }),
  );
  const manifestDigest = sha256(manifest);
  await writeFile(join(blobs, manifestDigest), manifest);
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${manifestDigest}`,
          size: manifest.length,
          annotations: { 'io.containerd.image.name': IMAGE, 'org.opencontainers.image.ref.name': 'test' },
        },
      ],
    }),
  );
  const tar = join(dir, 'image.tar');
  await run('tar', ['-C', layout, '-cf', tar, '.']);
  return tar;
}

async function waitForSocket(path: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`containerd exited early with ${child.exitCode}`);
    if (existsSync(path)) return;
    await sleep(50);
  }
  throw new Error(`containerd did not create ${path} within ${timeoutMs} ms`);
}

async function procCmdlines(): Promise<Array<{ pid: number; argv: string[] }>> {
  const out: Array<{ pid: number; argv: string[] }> = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const raw = await readFile(`/proc/${name}/cmdline`, 'utf8');
      out.push({ pid: Number(name), argv: raw.split('\0').filter((s, i, a) => s !== '' || i < a.length - 1) });
    } catch {
      // the process exited while we looked
    }
  }
  return out;
}

/** A shim process of `address`: the serving shim, and (`any`) containerd's short-lived `start`/`delete` invocations. */
function isShimOf(argv: string[], address: string, any = false): boolean {
  const bin = argv[0] ?? '';
  if (!bin.includes('containerd-shim')) return false;
  const i = argv.indexOf('-address');
  return i !== -1 && argv[i + 1] === address && (any || !argv.includes('-publish-binary'));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * `namespace`: share a namespace with another instance (to test what the tools make of two containerds whose
 * containers land in the same runc root and cgroup paths); stop() then touches only the ids this instance ran.
 */
export async function startContainerd(opts: { namespace?: string } = {}): Promise<TestContainerd> {
  await ensurePackages();
  const dir = await mkdtemp(join(tmpdir(), 'ts-ctrd-'));
  const root = join(dir, 'root');
  const state = join(dir, 'state');
  const address = join(dir, 'containerd.sock');
  const namespace = opts.namespace ?? `tsdoc-${randomBytes(3).toString('hex')}`;
  await mkdir(root, { recursive: true });
  await mkdir(state, { recursive: true });
  await run('mount', ['-t', 'tmpfs', '-o', 'mode=711,size=256m', 'tmpfs', state]);
  const config = join(dir, 'config.toml');
  await writeFile(
    config,
    [
      'version = 2',
      `root = "${root}"`,
      `state = "${state}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = "${address}"`,
      '[ttrpc]',
      `  address = "${address}.ttrpc"`,
      '[debug]',
      `  address = "${join(dir, 'debug.sock')}"`,
      '  level = "info"',
      '',
    ].join('\n'),
  );
  const logPath = join(dir, 'containerd.log');
  let child: ChildProcess;
  const startDaemon = async (): Promise<void> => {
    const fd = openSync(logPath, 'a');
    try {
      child = spawn('containerd', ['--config', config], { stdio: ['ignore', fd, fd], detached: true });
    } finally {
      closeSync(fd);
    }
    await waitForSocket(address, child, 20_000);
    // The socket exists slightly before the services answer.
    for (let i = 0; i < 100; i++) {
      const r = await ctrRaw(['version']);
      if (r.code === 0) return;
      await sleep(100);
    }
    throw new Error('containerd did not answer ctr version');
  };
  const sockets = new Set<string>();
  const ids = new Set<string>();

  const ctrRaw = async (args: string[], o: { namespace?: string; timeoutMs?: number } = {}): Promise<CtrResult> => {
    try {
      const r = await run('ctr', ['--address', address, '-n', o.namespace ?? namespace, ...args], { timeout: o.timeoutMs ?? 60_000 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code?: unknown; stdout?: string; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
    }
  };

  const shimSocket = (id: string, o: { namespace?: string } = {}): string =>
    join(SHIM_SOCKET_DIR, sha256(join(address, o.namespace ?? namespace, id)));

  await startDaemon();
  const tar = await buildImage(join(dir, 'image'));
  const imp = await ctrRaw(['images', 'import', tar]);
  if (imp.code !== 0) throw new Error(`ctr images import failed: ${imp.stderr}`);

  const taskRow = async (id: string, o: { namespace?: string } = {}): Promise<string[] | undefined> => {
    const r = await ctrRaw(['task', 'ls'], o);
    for (const line of r.stdout.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[0] === id) return cols;
    }
    return undefined;
  };

  const self: TestContainerd = {
    dir,
    address,
    root,
    state,
    namespace,
    ctr: ctrRaw,
    async runContainer(id, o = {}) {
      ids.add(`${o.namespace ?? namespace}/${id}`);
      sockets.add(shimSocket(id, o));
      const r = await ctrRaw(['run', '-d', '--null-io', IMAGE, id, 'sleep', '100000'], o);
      if (r.code !== 0) throw new Error(`ctr run ${id} failed: ${r.stderr}`);
      const pid = await self.taskPid(id, o);
      if (pid === undefined) throw new Error(`ctr run ${id}: no task`);
      return pid;
    },
    async taskPid(id, o = {}) {
      const cols = await taskRow(id, o);
      return cols?.[1] === undefined ? undefined : Number(cols[1]);
    },
    async taskStatus(id, o = {}) {
      return (await taskRow(id, o))?.[2];
    },
    async shimPid(id, o = {}) {
      for (const p of await procCmdlines()) {
        if (!isShimOf(p.argv, address)) continue;
        const ni = p.argv.indexOf('-namespace');
        const ii = p.argv.indexOf('-id');
        if (p.argv[ni + 1] === (o.namespace ?? namespace) && p.argv[ii + 1] === id) return p.pid;
      }
      return undefined;
    },
    async shimRuns(id, o = {}) {
      const out: number[] = [];
      for (const p of await procCmdlines()) {
        if (!isShimOf(p.argv, address, true)) continue;
        if (p.argv[p.argv.indexOf('-namespace') + 1] === (o.namespace ?? namespace) && p.argv[p.argv.indexOf('-id') + 1] === id) out.push(p.pid);
      }
      return out;
    },
    shimSocket,
    bundleDir: (id, o = {}) => join(state, 'io.containerd.runtime.v2.task', o.namespace ?? namespace, id),
    async kill9() {
      const pid = child.pid;
      if (pid === undefined) return;
      process.kill(pid, 'SIGKILL');
      while (alive(pid) && child.exitCode === null && child.signalCode === null) await sleep(20);
    },
    async restart() {
      await startDaemon();
    },
    trackSocket(path) {
      sockets.add(path);
    },
    async stop() {
      const pid = child.pid;
      await reapInstance(dir, {
        namespaces: [namespace, ...[...ids].map((x) => x.split('/')[0] ?? namespace)],
        extraSockets: [...sockets],
        containerdPid: child.exitCode === null && child.signalCode === null ? pid : undefined,
        onlyIds: opts.namespace !== undefined ? new Set([...ids].map((x) => x.slice(x.indexOf('/') + 1))) : undefined,
      });
    },
  };
  return self;
}

/**
 * Stops everything one instance started and removes its temp dir. Also usable on the directory of an instance
 * whose test process crashed (`node --import tsx test/support/containerd.ts reap <dir>`): containerd is found by its
 * `--config <dir>/config.toml`, shims by `-address <dir>/containerd.sock`, namespaces from the state dir.
 */
export async function reapInstance(dir: string, opts: { namespaces?: string[]; extraSockets?: string[]; containerdPid?: number | undefined; onlyIds?: Set<string> | undefined } = {}): Promise<void> {
  const address = join(dir, 'containerd.sock');
  const state = join(dir, 'state');
  const taskDir = join(state, 'io.containerd.runtime.v2.task');
  const nsList = new Set([...(opts.namespaces ?? []), ...(await readdir(taskDir).catch(() => [] as string[]))]);
  // A shared namespace: only the ids this instance ran (and whose bundles it still has) are its to clean.
  const only = opts.onlyIds;
  if (only) for (const ns of nsList) for (const id of await readdir(join(taskDir, ns)).catch(() => [] as string[])) only.add(id);
  const procs = await procCmdlines();
  // Container processes first (by our namespaces' cgroups), then shims of our address, then containerd.
  for (const ns of nsList) await killCgroupTree(ns, false, only);
  for (const p of procs.filter((x) => isShimOf(x.argv, address, true))) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const daemons = procs.filter((p) => p.argv[0]?.endsWith('containerd') === true && p.argv.includes(join(dir, 'config.toml'))).map((p) => p.pid);
  if (opts.containerdPid !== undefined && !daemons.includes(opts.containerdPid)) daemons.push(opts.containerdPid);
  for (const pid of daemons) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  for (let i = 0; i < 100 && daemons.some(alive); i++) await sleep(50);
  for (const pid of daemons.filter(alive)) process.kill(pid, 'SIGKILL');
  for (const ns of nsList) await killCgroupTree(ns, true, only);
  const sockets = new Set(opts.extraSockets ?? []);
  for (const ns of nsList) {
    for (const id of await readdir(join(taskDir, ns)).catch(() => [] as string[])) sockets.add(join(SHIM_SOCKET_DIR, sha256(join(address, ns, id))));
  }
  for (const s of sockets) await rm(s, { force: true }).catch(() => undefined);
  for (const ns of nsList) {
    const runcDirs = only ? [...only].map((id) => join('/run/containerd/runc', ns, id)) : [join('/run/containerd/runc', ns)];
    for (const d of runcDirs) await rm(d, { recursive: true, force: true }).catch(() => undefined);
  }
  await unmountUnder(dir);
  await run('umount', [state]).catch(() => run('umount', ['-l', state]).catch(() => undefined));
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

const CGROUP_CONTROLLERS = ['pids', 'memory', 'cpu', 'cpuacct', 'cpuset', 'blkio', 'devices', 'freezer', 'systemd', 'unified', 'hugetlb', 'net_cls', 'perf_event'];

/** Kills every process in our namespace's cgroups and removes the cgroups (they are unique to this instance). */
async function killCgroupTree(ns: string, remove: boolean, only?: Set<string>): Promise<void> {
  const bases = [join('/sys/fs/cgroup', ns), ...CGROUP_CONTROLLERS.map((c) => join('/sys/fs/cgroup', c, ns))];
  const mine = async (base: string): Promise<string[]> => (await readdir(base).catch(() => [] as string[])).filter((id) => !only || only.has(id));
  for (const base of bases) {
    const ids = await mine(base);
    for (const id of ids) {
      const cg = join(base, id);
      if (!(await stat(cg).then((s) => s.isDirectory()).catch(() => false))) continue;
      const procs = await readFile(join(cg, 'cgroup.procs'), 'utf8').catch(() => '');
      for (const line of procs.split('\n')) {
        const pid = Number(line);
        if (Number.isInteger(pid) && pid > 0) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      }
    }
  }
  await sleep(100);
  if (!remove) return;
  for (const base of bases) {
    for (const id of await mine(base)) await rmdir(join(base, id)).catch(() => undefined);
    if (!only) await rmdir(base).catch(() => undefined);
  }
}

/** Unmounts every mount point under `dir`, deepest first. */
export async function unmountUnder(dir: string): Promise<void> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const points = info
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined && p.startsWith(dir + '/'))
    .map((p) => p.replace(/\\040/g, ' '));
  points.sort((a, b) => b.length - a.length);
  for (const p of points) {
    if (p === join(dir, 'state')) continue; // the tmpfs itself goes last, in stop()
    await run('umount', [p]).catch(() => run('umount', ['-l', p]).catch(() => undefined));
  }
}

/** Reads a symlink without throwing (test helper for fd and cwd links). */
export async function tryReadlink(path: string): Promise<string | undefined> {
  return readlink(path).catch(() => undefined);
}

// `node --import tsx test/support/containerd.ts reap /tmp/ts-ctrd-XXXX` cleans up after a crashed test process.
if (process.argv[2] === 'reap' && process.argv[3] && import.meta.url === `file://${process.argv[1]}`) {
  await reapInstance(process.argv[3]);
}
