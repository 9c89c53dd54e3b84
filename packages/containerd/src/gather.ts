// One pass over everything the doctor correlates: containerd's view (namespaces, containers, tasks over gRPC) and
// the host's view (shim processes, unix listeners and their owners, shim socket files, bundles, mounts, cgroups).
// The snapshot is plain data so diagnose.ts is a pure function and unit tests can feed it fixtures.
import { readFileSync, readdirSync } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { errorSummary, throwIfAborted } from '@transship/core/errors';
import { scanBundles, TASK_DIR, type Bundle, type SuspiciousEntry } from './bundles.js';
import { ContainerdClient, timestampToDate, type TaskStatus } from './client.js';
import { listProcesses, listenersByPath, readMounts, readUnixSockets, socketOwners, isGone, type BlindSpot, type Mount, type ProcInfo } from './procfs.js';
import { CgroupLayout, specFacts } from './cgroups.js';
import { SHIM_SOCKET_DIR, isServingShim, parseShimArgv, socketPath } from './shim-socket.js';
import { DEFAULT_RUNC_ROOT, scanRuncStates, type RuncState } from './runc-state.js';

export interface ContainerState {
  namespace: string;
  id: string;
  /** The id its shim is keyed by (pod sandbox id for Kubernetes containers). */
  groupId: string;
  /** Its cgroup relative to a hierarchy root (the spec's linux.cgroupsPath; cgroups.ts). */
  cgroupRel: string;
  image: string;
  runtime: string;
  createdAt?: Date | undefined;
  labels: Record<string, string>;
}

export interface TaskState {
  namespace: string;
  id: string;
  pid: number;
  status: TaskStatus;
  exitStatus: number;
  exitedAt?: Date | undefined;
}

export interface ShimProcess {
  pid: number;
  startTime: number;
  state: string;
  namespace: string;
  id: string;
  address: string;
  /** Direct children: the container init processes it supervises. */
  children: number[];
}

export interface SocketFile {
  path: string;
  isSocket: boolean;
}

export interface Listener {
  inodes: number[];
  /** Pids holding one of the listening inodes; empty when not visible (see blind spots). */
  owners: number[];
}

export interface CgroupState {
  namespace: string;
  id: string;
  paths: string[];
  pids: number[];
}

export interface Snapshot {
  takenAt: number;
  address: string;
  stateDir: string;
  socketDir: string;
  containerd: { reachable: boolean; version?: string | undefined; error?: { code: string; message: string } | undefined; socketListening: boolean };
  /** Namespaces judged: the ones asked for, or every namespace containerd (or the state dir) knows. */
  namespaces: string[];
  containers: ContainerState[];
  tasks: TaskState[];
  shims: ShimProcess[];
  /** Shim processes of other containerd instances: counted, never judged. */
  otherShims: number;
  /** The same, listed: what another instance owns is attributed to it (runc state, cgroups shared by ns/id). */
  otherShimList: ShimProcess[];
  /** containerd's `shim start` / `shim delete` runs for this containerd: a create (or a dead shim's cleanup) in flight. */
  shimInvocations: Array<{ pid: number; namespace: string; id: string; action: string }>;
  processes: Map<number, ProcInfo>;
  socketFiles: SocketFile[];
  listeners: Map<string, Listener>;
  bundles: Bundle[];
  suspicious: SuspiciousEntry[];
  mounts: Mount[];
  cgroups: CgroupState[];
  runcStates: RuncState[];
  runcRoot: string;
  blind: BlindSpot[];
}

export interface GatherOptions {
  address: string;
  stateDir: string;
  /** Namespaces to judge; all when empty or undefined. */
  namespaces?: string[] | undefined;
  socketDir?: string | undefined;
  procRoot?: string | undefined;
  cgroupRoot?: string | undefined;
  runcRoot?: string | undefined;
  client?: ContainerdClient | undefined;
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

function errCode(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : 'EUNKNOWN';
}

/** Unwraps our retry wrapper so the report says "unreachable", not "gave up after 3 attempts". */
function rootSummary(err: unknown): { code: string; message: string } {
  let e: unknown = err;
  while (e instanceof Error && (e as { code?: unknown }).code === 'TS_RETRY_EXHAUSTED' && e.cause) e = e.cause;
  return errorSummary(e);
}

async function apiView(client: ContainerdClient, wanted: string[] | undefined, signal: AbortSignal | undefined): Promise<{ version: string; namespaces: string[]; containers: ContainerState[]; tasks: TaskState[] }> {
  const v = await client.version({ signal });
  const all = await client.listNamespaces({ signal });
  const namespaces = wanted && wanted.length > 0 ? wanted : all;
  const perNs = await Promise.all(
    namespaces.map(async (ns) => {
      const [cs, ts] = await Promise.all([client.listContainers(ns, { signal }), client.listTasks(ns, { signal })]);
      const containers: ContainerState[] = cs.map((c) => ({
        namespace: ns,
        id: c.id,
        ...specFacts(ns, c.id, c.spec?.value),
        image: c.image,
        runtime: c.runtime?.name ?? '',
        createdAt: timestampToDate(c.created_at),
        labels: c.labels,
      }));
      // Tasks.List names the container in `id` (container_id stays empty there); Get fills container_id.
      const tasks: TaskState[] = ts.map((t) => ({ namespace: ns, id: t.container_id || t.id, pid: t.pid, status: t.status, exitStatus: t.exit_status, exitedAt: timestampToDate(t.exited_at) }));
      return { containers, tasks };
    }),
  );
  return { version: v.version, namespaces, containers: perNs.flatMap((x) => x.containers), tasks: perNs.flatMap((x) => x.tasks) };
}

async function scanSocketDir(dir: string, blind: BlindSpot[]): Promise<SocketFile[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (errCode(err) !== 'ENOENT') blind.push({ what: dir, reason: errCode(err) });
    return [];
  }
  const out: SocketFile[] = [];
  await Promise.all(
    names.map(async (name) => {
      const path = join(dir, name);
      const st = await lstat(path).catch(() => undefined); // vanished mid-scan: it is simply not there
      if (st) out.push({ path, isSocket: st.isSocket() });
    }),
  );
  return out;
}

/**
 * The cgroups the doctor judges: each container's own (from its spec, cgroups.ts — the same layout the watcher
 * checks) and every cgroup directly under `/<ns>/` in each hierarchy (ctr's layout), which is where the cgroups of
 * containers containerd no longer knows are found.
 */
function scanCgroups(layout: CgroupLayout, namespaces: string[], containers: ContainerState[], blind: BlindSpot[]): CgroupState[] {
  const byKey = new Map<string, CgroupState>();
  const add = (ns: string, id: string, path: string): void => {
    let procs: string;
    try {
      // cgroupfs reads are in-kernel and fast; sync avoids ~500 thread-pool round trips on a 100-task node.
      procs = readFileSync(join(path, 'cgroup.procs'), 'utf8');
    } catch (err) {
      if (errCode(err) !== 'ENOTDIR' && errCode(err) !== 'ENOENT') blind.push({ what: path, reason: errCode(err) });
      return; // no such cgroup, or a control file
    }
    const key = `${ns}/${id}`;
    const entry = byKey.get(key) ?? { namespace: ns, id, paths: [], pids: [] };
    if (entry.paths.includes(path)) return;
    entry.paths.push(path);
    for (const l of procs.split('\n')) {
      const pid = Number(l);
      if (l !== '' && Number.isInteger(pid) && !entry.pids.includes(pid)) entry.pids.push(pid);
    }
    byKey.set(key, entry);
  };
  const judged = new Set(namespaces);
  for (const c of containers) if (judged.has(c.namespace)) for (const dir of layout.dirs(c.cgroupRel)) add(c.namespace, c.id, dir);
  for (const ns of namespaces) {
    for (const base of layout.dirs(join('/', ns))) {
      let ids: string[];
      try {
        ids = readdirSync(base);
      } catch {
        continue; // no such namespace cgroup: nothing to see
      }
      for (const id of ids) add(ns, id, join(base, id));
    }
  }
  return [...byKey.values()];
}

export async function gather(opts: GatherOptions): Promise<Snapshot> {
  const signal = opts.signal;
  const address = socketPath(opts.address);
  const stateDir = resolve(opts.stateDir);
  const socketDir = opts.socketDir ?? SHIM_SOCKET_DIR;
  const procOpts = { procRoot: opts.procRoot, signal };
  const blind: BlindSpot[] = [];
  const client = opts.client ?? new ContainerdClient({ address, timeoutMs: opts.timeoutMs });
  try {
    // The API and the host are read concurrently: the API round trips dominate on a busy node.
    const apiP = apiView(client, opts.namespaces, signal).then(
      (v) => ({ ok: true as const, v }),
      (err: unknown) => ({ ok: false as const, err }),
    );
    const [procs, unix, mountsR, bundlesR, socketFiles] = await Promise.all([
      listProcesses(procOpts),
      readUnixSockets(procOpts),
      readMounts(procOpts),
      scanBundles(stateDir, { namespaces: opts.namespaces && opts.namespaces.length > 0 ? new Set(opts.namespaces) : undefined, signal }),
      scanSocketDir(socketDir, blind),
    ]);
    const api = await apiP;
    throwIfAborted(signal);
    blind.push(...procs.blind, ...unix.blind, ...mountsR.blind, ...bundlesR.blind);

    const shims: ShimProcess[] = [];
    const otherShimList: ShimProcess[] = [];
    const shimInvocations: Snapshot['shimInvocations'] = [];
    const childrenOf = new Map<number, number[]>();
    for (const p of procs.processes.values()) {
      if (isGone(p)) continue;
      const list = childrenOf.get(p.ppid);
      if (list) list.push(p.pid);
      else childrenOf.set(p.ppid, [p.pid]);
    }
    for (const p of procs.processes.values()) {
      const a = parseShimArgv(p.argv);
      if (!a || a.namespace === undefined || a.id === undefined || isGone(p)) continue;
      // `shim start`/`delete` invocations of the same binary are short-lived: evidence of a create in flight only.
      if (!isServingShim(a)) {
        if (socketPath(a.address ?? '') === address) shimInvocations.push({ pid: p.pid, namespace: a.namespace, id: a.id, action: a.action ?? '?' });
        continue;
      }
      const shim = { pid: p.pid, startTime: p.startTime, state: p.state, namespace: a.namespace, id: a.id, address: socketPath(a.address ?? ''), children: childrenOf.get(p.pid) ?? [] };
      (shim.address === address ? shims : otherShimList).push(shim);
    }

    const listenRows = listenersByPath(unix.rows);
    const socketListening = listenRows.has(address);
    // Owners of listeners on shim socket paths: ask the shims first, everyone else only if something stays unowned.
    const wantedInodes = new Set<number>();
    for (const [path, inodes] of listenRows) if (path.startsWith(socketDir + '/')) for (const i of inodes) wantedInodes.add(i);
    const first = await socketOwners(shims.map((s) => s.pid), wantedInodes, procOpts);
    const owners = first.owners;
    blind.push(...first.blind);
    const unowned = new Set([...wantedInodes].filter((i) => !owners.has(i)));
    if (unowned.size > 0) {
      const shimPids = new Set(shims.map((s) => s.pid));
      const rest = await socketOwners([...procs.processes.keys()].filter((p) => !shimPids.has(p)), unowned, procOpts);
      for (const [i, pids] of rest.owners) owners.set(i, pids);
      blind.push(...rest.blind);
    }
    const listeners = new Map<string, Listener>();
    for (const [path, inodes] of listenRows) {
      if (!path.startsWith(socketDir + '/') && !path.startsWith('@')) continue;
      listeners.set(path, { inodes, owners: inodes.flatMap((i) => owners.get(i) ?? []) });
    }

    let namespaces: string[];
    const containerd: Snapshot['containerd'] = { reachable: api.ok, socketListening };
    let containers: ContainerState[] = [];
    let tasks: TaskState[] = [];
    if (api.ok) {
      containerd.version = api.v.version;
      namespaces = api.v.namespaces;
      containers = api.v.containers;
      tasks = api.v.tasks;
    } else {
      containerd.error = rootSummary(api.err);
      // Without the API, judge what the host shows for the namespaces we can see on disk or in shim command lines.
      namespaces = opts.namespaces && opts.namespaces.length > 0 ? opts.namespaces : [...new Set([...bundlesR.bundles.map((b) => b.namespace), ...shims.map((s) => s.namespace)])];
    }
    const judged = new Set(namespaces);
    const taskRoot = join(stateDir, TASK_DIR) + '/';
    const mounts = mountsR.mounts.filter((m) => m.mountPoint.startsWith(taskRoot));
    const cgroups = scanCgroups(new CgroupLayout(opts.cgroupRoot), namespaces, containers, blind);
    const runcRoot = opts.runcRoot ?? DEFAULT_RUNC_ROOT;
    const runc = await scanRuncStates(runcRoot, namespaces);
    blind.push(...runc.blind);
    return {
      takenAt: Date.now(),
      address,
      stateDir,
      socketDir,
      containerd,
      namespaces,
      containers,
      tasks,
      shims: shims.filter((s) => judged.has(s.namespace) || !api.ok),
      otherShims: otherShimList.length,
      otherShimList,
      shimInvocations,
      processes: procs.processes,
      socketFiles,
      listeners,
      bundles: bundlesR.bundles.filter((b) => judged.has(b.namespace)),
      suspicious: bundlesR.suspicious.filter((s) => judged.has(s.namespace)),
      mounts,
      cgroups,
      runcStates: runc.states,
      runcRoot,
      blind,
    };
  } finally {
    if (!opts.client) client.close();
  }
}
