// Repair: findings → a plan of actions → each action re-checks its precondition on fresh state right before it acts.
// The snapshot the plan came from may be seconds old (a person read it and typed "y"); in that time a shim may have
// been restarted, a pid reused, a task created. So nothing here trusts the snapshot: every check re-reads /proc,
// the socket table, mountinfo or containerd's API, and an action whose precondition no longer holds is skipped and
// audited as such (TS_PRECONDITION_CHANGED), never forced.
//
// What is never done: deleting task state by removing files (tasks are deleted through containerd's API), touching
// container metadata without --remove-containers, following a symlink out of the state dir, killing a process that is
// not a shim of the containerd being judged (foreign listeners are reported for a person to handle), acting on a
// container that has a task with a live shim.
import { execFile } from 'node:child_process';
import { lstat, readFile, realpath, rm, rmdir, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TransshipError, errorSummary, throwIfAborted } from '@transship/core/errors';
import { containerdDoctorRepairActionsTotal } from './metrics.js';
import { withSpan } from '@transship/core/tracing';
import { TASK_DIR, readSmallFile } from './bundles.js';
import { parseRuncState } from './runc-state.js';
import type { ContainerdClient } from './client.js';
import type { Diagnosis } from './diagnose.js';
import type { Finding, FindingCode } from './findings.js';
import { isGone, listProcesses, listenersByPath, processesUsingDir, readMounts, readProcess, readUnixSockets, type ProcInfo } from './procfs.js';
import { specFacts } from './cgroups.js';
import { isShimOf, parseShimArgv, shimSocketPath, socketPath } from './shim-socket.js';

export type ActionKind = 'stop-shim' | 'delete-task' | 'unmount' | 'remove-bundle' | 'runc-delete' | 'remove-socket' | 'remove-cgroup' | 'remove-container';


export interface Action {
  kind: ActionKind;
  namespace: string;
  containerId: string;
  /** What is acted on: a path, a pid, a task. */
  target: string;
  why: string;
  precondition: string;
  pid?: number | undefined;
  startTime?: number | undefined;
  paths?: string[] | undefined;
}

export interface PlanOptions {
  removeContainers?: boolean | undefined;
}


export function plan(findings: Finding[], opts: PlanOptions = {}): Action[] {
  const actions: Action[] = [];
  const seen = new Set<string>();
  for (const f of findings) {
    const ns = f.namespace;
    const id = f.containerId;
    const row = ACTIONS.find((r) => r.finding === f.code);
    // no row: a manual finding, the report says what a person should do
    if (ns === undefined || id === undefined || !row) continue;
    const planned = row.plan({ ...f, namespace: ns, containerId: id }, f.evidence, opts);
    if (!planned || seen.has(`${row.kind}|${planned.target}`)) continue;
    seen.add(`${row.kind}|${planned.target}`);
    actions.push({ kind: row.kind, namespace: ns, containerId: id, why: `${f.code}: ${f.summary}`, precondition: row.precondition, ...planned });
  }
  const order = (k: ActionKind): number => ACTIONS.findIndex((r) => r.kind === k);
  actions.sort((x, y) => order(x.kind) - order(y.kind));
  return actions;
}

export interface AuditRecord {
  time: string;
  event: 'diagnosis' | 'action' | 'after';
  [k: string]: unknown;
}

export interface RepairContext {
  client: ContainerdClient;
  address: string;
  stateDir: string;
  socketDir: string;
  procRoot?: string | undefined;
  signal?: AbortSignal | undefined;
  audit: (rec: AuditRecord) => void;
  runcBinary?: string | undefined;
  /** How long a shim gets after SIGTERM before SIGKILL. */
  killGraceMs?: number | undefined;
}

export type Outcome = 'done' | 'skipped' | 'failed';

export interface ActionResult {
  action: Action;
  outcome: Outcome;
  /** What the re-check saw. */
  observed: Record<string, unknown>;
  error?: { code: string; message: string } | undefined;
}

class PreconditionFailed extends TransshipError {
  constructor(
    message: string,
    readonly observed: Record<string, unknown>,
  ) {
    super('TS_PRECONDITION_CHANGED', message, { details: observed });
  }
}

function exec(cmd: string, args: string[], signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    execFile(cmd, args, { timeout: 10_000, signal }, (err, _out, stderr) => {
      if (err) reject(new TransshipError('TS_REPAIR_FAILED', `${cmd} ${args.join(' ')}: ${String(stderr).trim() || err.message}`, { cause: err }));
      else resolvePromise();
    });
  });
}

async function shimsOf(ctx: RepairContext, ns: string, groupId: string): Promise<ProcInfo[]> {
  const { processes } = await listProcesses({ procRoot: ctx.procRoot, signal: ctx.signal });
  return [...processes.values()].filter((p) => !isGone(p) && isShimOf(p.argv, ctx.address, ns, groupId));
}

async function groupIdOf(ctx: RepairContext, ns: string, id: string): Promise<string> {
  const cs = await ctx.client.listContainers(ns, { signal: ctx.signal, filters: [`id==${id}`] });
  return specFacts(ns, id, cs[0]?.spec?.value).groupId;
}

async function listening(ctx: RepairContext, path: string): Promise<boolean> {
  const { rows, blind } = await readUnixSockets({ procRoot: ctx.procRoot });
  if (blind.length > 0) throw new PreconditionFailed('cannot read the unix socket table', { blind });
  return listenersByPath(rows).has(path);
}

async function noTask(ctx: RepairContext, ns: string, id: string, observed: Record<string, unknown>): Promise<void> {
  const t = await ctx.client.getTask(ns, id, { signal: ctx.signal });
  observed.task = t ? `${t.status} pid ${t.pid}` : null;
  if (t) throw new PreconditionFailed(`containerd now has a task for ${ns}/${id} (${t.status})`, observed);
}

/** A path we are about to remove must sit inside the state dir with no symlink anywhere on the way. */
async function assertInside(base: string, path: string, observed: Record<string, unknown>): Promise<void> {
  const real = await realpath(path).catch(() => undefined);
  observed.realpath = real ?? null;
  if (real !== path || !path.startsWith(base + '/')) throw new PreconditionFailed(`${path} is not a plain path inside ${base}`, observed);
}

async function waitGone(pid: number, startTime: number, ms: number, procRoot: string | undefined): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    const p = await readProcess(pid, { procRoot }).catch(() => undefined);
    if (isGone(p) || p?.startTime !== startTime) return true;
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
}

function signalPid(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'ESRCH') throw err;
  }
}

/**
 * One row per repair action, in execution order (processes first — they hold sockets and mounts — then API state, then
 * files): the finding it repairs, what it does, the precondition it re-checks on fresh state right before acting, the
 * plan (the action's target from the finding's evidence, or none) and the act itself. The plan, the report, the docs
 * and the audit log all read the same row.
 */
export interface ActionRow {
  kind: ActionKind;
  finding: FindingCode;
  description: string;
  precondition: string;
  plan(f: Finding & { namespace: string; containerId: string }, ev: Finding['evidence'], opts: PlanOptions): Pick<Action, 'target' | 'pid' | 'startTime' | 'paths'> | undefined;
  act(a: Action, ctx: RepairContext, observed: Record<string, unknown>): Promise<void>;
}

export const ACTIONS: readonly ActionRow[] = [
  {
    kind: 'stop-shim',
    finding: 'orphaned-shim',
    description: 'SIGKILL the container processes it supervises (and wait for them), SIGTERM the shim, wait, SIGKILL. Never for a shim whose containerd is gone (restart containerd: it reconnects)',
    precondition: 'same process (pid + start time) is still a shim of this containerd, and containerd still has no task for its id',
    plan(_f, ev, _opts) {
      if (ev.reason === 'containerd-gone' || typeof ev.pid !== 'number') return undefined;
      return { target: `pid ${ev.pid}`, pid: ev.pid, startTime: typeof ev.startTime === 'number' ? ev.startTime : undefined };
    },
    async act(a, ctx, observed) {
      const pid = a.pid;
      if (pid === undefined) throw new PreconditionFailed('no pid', observed);
      const p = await readProcess(pid, { procRoot: ctx.procRoot }).catch(() => undefined);
      observed.process = p ? `${p.argv.join(' ')} state=${p.state}` : null;
      if (isGone(p) || !p) throw new PreconditionFailed(`pid ${pid} is gone`, observed);
      if (a.startTime !== undefined && p.startTime !== a.startTime) throw new PreconditionFailed(`pid ${pid} was reused by another process`, observed);
      if (!isShimOf(p.argv, ctx.address, a.namespace, a.containerId)) throw new PreconditionFailed(`pid ${pid} is no longer the shim of ${a.namespace}/${a.containerId}`, observed);
      // Still orphaned: no task of the group, checked through the API.
      const [tasks, containers] = await Promise.all([ctx.client.listTasks(a.namespace, { signal: ctx.signal }), ctx.client.listContainers(a.namespace, { signal: ctx.signal })]);
      const groups = new Map(containers.map((c) => [c.id, specFacts(a.namespace, c.id, c.spec?.value).groupId]));
      const live = tasks.filter((t) => (groups.get(t.container_id || t.id) ?? (t.container_id || t.id)) === a.containerId);
      observed.tasks = live.map((t) => `${t.container_id || t.id} ${t.status}`);
      if (live.length > 0) throw new PreconditionFailed(`containerd has a task for ${a.namespace}/${a.containerId} again`, observed);
      // The container processes it supervises are unknown to containerd now; stop them with their shim, as
      // containerd 1.7's leaked-shim cleanup does, so the id can be started again (runc refuses while they exist).
      const { processes } = await listProcesses({ procRoot: ctx.procRoot, signal: ctx.signal });
      const children = [...processes.values()].filter((c) => c.ppid === pid && !isGone(c));
      observed.children = children.map((c) => `${c.pid} ${c.argv.join(' ').slice(0, 120)}`);
      for (const c of children) signalPid(c.pid, 'SIGKILL');
      // Wait for them: a SIGKILLed process lingers a moment, and a diagnosis taken then would still see it running.
      for (const c of children) if (!(await waitGone(c.pid, c.startTime, 2000, ctx.procRoot))) observed.survivors = [...((observed.survivors as number[] | undefined) ?? []), c.pid];
      signalPid(pid, 'SIGTERM');
      const grace = ctx.killGraceMs ?? 5000;
      if (!(await waitGone(pid, p.startTime, grace, ctx.procRoot))) {
        observed.sigkill = true;
        signalPid(pid, 'SIGKILL');
        if (!(await waitGone(pid, p.startTime, 2000, ctx.procRoot))) throw new TransshipError('TS_REPAIR_FAILED', `shim pid ${pid} survived SIGKILL`);
      }
    },
  },
  {
    kind: 'delete-task',
    finding: 'task-shim-dead',
    description: 'Tasks.Delete through the API (never by removing files)',
    precondition: 'containerd still lists the task, and it is STOPPED or its shim process is gone with nothing listening on its socket',
    plan(f, _ev, _opts) {
      return { target: `task ${f.namespace}/${f.containerId}` };
    },
    async act(a, ctx, observed) {
      const t = await ctx.client.getTask(a.namespace, a.containerId, { signal: ctx.signal });
      observed.task = t ? `${t.status} pid ${t.pid}` : null;
      if (!t) throw new PreconditionFailed('the task is already gone', observed);
      const gid = await groupIdOf(ctx, a.namespace, a.containerId);
      const shims = await shimsOf(ctx, a.namespace, gid);
      const sock = shimSocketPath(ctx.address, a.namespace, gid, ctx.socketDir);
      const listens = await listening(ctx, sock);
      observed.shims = shims.map((s) => s.pid);
      observed.socketListening = listens;
      const shimDead = shims.length === 0 && !listens;
      if (t.status !== 'STOPPED' && !shimDead) throw new PreconditionFailed(`task is ${t.status} and its shim is alive`, observed);
      try {
        const r = await ctx.client.deleteTask(a.namespace, a.containerId, { signal: ctx.signal });
        observed.deleted = { pid: r.pid, exitStatus: r.exit_status };
      } catch (err) {
        if (err instanceof TransshipError && err.code === 'TS_NOT_FOUND') {
          observed.deleted = 'already gone';
          return;
        }
        throw err;
      }
    },
  },
  {
    kind: 'unmount',
    finding: 'leftover-rootfs-mount',
    description: 'umount the mount point',
    precondition: 'still mounted, containerd has no task for the container, and no process has its root or cwd inside',
    plan(_f, ev, _opts) {
      return typeof ev.mountPoint === 'string' ? { target: ev.mountPoint } : undefined;
    },
    async act(a, ctx, observed) {
      const { mounts } = await readMounts({ procRoot: ctx.procRoot });
      if (!mounts.some((m) => m.mountPoint === a.target)) throw new PreconditionFailed(`${a.target} is no longer mounted`, observed);
      await noTask(ctx, a.namespace, a.containerId, observed);
      const { processes } = await listProcesses({ procRoot: ctx.procRoot, signal: ctx.signal });
      const { users } = await processesUsingDir(a.target, [...processes.keys()], { procRoot: ctx.procRoot, signal: ctx.signal });
      observed.users = users;
      if (users.length > 0) throw new PreconditionFailed(`processes ${users.join(', ')} use ${a.target}`, observed);
      await exec('umount', [a.target], ctx.signal);
    },
  },
  {
    kind: 'remove-bundle',
    finding: 'leaked-bundle',
    description: 'unmount what is mounted under the bundle, then remove the directory (symlinks unlinked, never followed)',
    precondition: 'containerd has no task for the container, no shim of this containerd serves it or is being started or deleted for it, nothing listens on its shim socket, the dir was not changed in the last second (not being written), no process uses it, it is a real directory inside the state dir, and nothing stays mounted under it',
    plan(_f, ev, _opts) {
      return typeof ev.dir === 'string' ? { target: ev.dir } : undefined;
    },
    async act(a, ctx, observed) {
      const dir = a.target;
      const base = join(ctx.stateDir, TASK_DIR);
      const st = await lstat(dir).catch(() => undefined);
      if (!st) throw new PreconditionFailed(`${dir} is already gone`, observed);
      if (!st.isDirectory()) throw new PreconditionFailed(`${dir} is not a directory`, observed);
      if (dirname(dirname(dir)) !== base) throw new PreconditionFailed(`${dir} is not a bundle dir of ${base}`, observed);
      await assertInside(await realpath(ctx.stateDir), dir, observed);
      await noTask(ctx, a.namespace, a.containerId, observed);
      const gid = await groupIdOf(ctx, a.namespace, a.containerId).catch(() => a.containerId);
      // Every run of the shim binary for the id counts here, `shim start` and `shim delete` too: a create in flight.
      const { processes } = await listProcesses({ procRoot: ctx.procRoot, signal: ctx.signal });
      const shims = [...processes.values()].filter((p) => {
        const args = parseShimArgv(p.argv);
        return !isGone(p) && args !== undefined && socketPath(args.address ?? '') === ctx.address && args.namespace === a.namespace && (args.id === gid || args.id === a.containerId);
      });
      observed.shims = shims.map((s) => `${s.pid} ${s.argv.join(' ').slice(0, 160)}`);
      if (shims.length > 0) throw new PreconditionFailed(`shim ${shims.map((s) => s.pid).join(', ')} still serves ${a.namespace}/${gid} or is being started for it`, observed);
      const listens = await listening(ctx, shimSocketPath(ctx.address, a.namespace, gid, ctx.socketDir));
      observed.socketListening = listens;
      if (listens) throw new PreconditionFailed(`something listens on the shim socket of ${a.namespace}/${gid}`, observed);
      const fresh = await lstat(dir).catch(() => undefined);
      observed.changedMsAgo = fresh ? Math.round(Date.now() - fresh.mtimeMs) : null;
      if (fresh && Date.now() - fresh.mtimeMs < 1000) throw new PreconditionFailed(`${dir} changed in the last second: a create may be writing it`, observed);
      const { users } = await processesUsingDir(dir, [...processes.keys()], { procRoot: ctx.procRoot, signal: ctx.signal });
      observed.users = users;
      if (users.length > 0) throw new PreconditionFailed(`processes ${users.join(', ')} use ${dir}`, observed);
      // Unmount the rootfs first: removing a directory tree with a live overlay under it would delete the container's files.
      const before = (await readMounts({ procRoot: ctx.procRoot })).mounts.filter((m) => m.mountPoint === dir || m.mountPoint.startsWith(dir + '/'));
      observed.unmounted = before.map((m) => m.mountPoint);
      for (const m of before.sort((x, y) => y.mountPoint.length - x.mountPoint.length)) await exec('umount', [m.mountPoint], ctx.signal);
      const after = (await readMounts({ procRoot: ctx.procRoot })).mounts.filter((m) => m.mountPoint === dir || m.mountPoint.startsWith(dir + '/'));
      if (after.length > 0) throw new TransshipError('TS_REPAIR_FAILED', `still mounted under ${dir}: ${after.map((m) => m.mountPoint).join(', ')}`);
      throwIfAborted(ctx.signal);
      // fs.rm unlinks symlinks (the `work` link) instead of following them.
      await rm(dir, { recursive: true, force: false });
    },
  },
  {
    kind: 'runc-delete',
    finding: 'leftover-runc-state',
    description: '`runc --root <root>/<ns> delete --force <id>`: the cleanup of runc itself, never rm',
    precondition: "containerd has no task for the container, no shim of this containerd serves it, and runc's recorded init process is dead",
    plan(_f, ev, _opts) {
      return ev.initAlive === false && typeof ev.dir === 'string' ? { target: ev.dir } : undefined;
    },
    async act(a, ctx, observed) {
      await noTask(ctx, a.namespace, a.containerId, observed);
      const gid = await groupIdOf(ctx, a.namespace, a.containerId).catch(() => a.containerId);
      const shims = await shimsOf(ctx, a.namespace, gid);
      observed.shims = shims.map((s) => s.pid);
      if (shims.length > 0) throw new PreconditionFailed(`shim ${shims.map((s) => s.pid).join(', ')} still serves ${a.namespace}/${gid}`, observed);
      const f = await readSmallFile(join(a.target, 'state.json'), 4 * 1024 * 1024);
      if (f.text === undefined) throw new PreconditionFailed(`${a.target}/state.json is gone or unreadable`, observed);
      const st = parseRuncState(f.text);
      const init = st.initPid !== undefined ? await readProcess(st.initPid, { procRoot: ctx.procRoot }).catch(() => undefined) : undefined;
      const alive = !isGone(init) && (st.initStart === undefined || init?.startTime === st.initStart);
      observed.initPid = st.initPid ?? null;
      observed.initAlive = alive;
      if (alive) throw new PreconditionFailed(`runc's init pid ${st.initPid} is alive`, observed);
      // `runc delete --force` is runc's own cleanup (state dir and cgroup); we never remove its files by hand.
      await exec(ctx.runcBinary ?? 'runc', ['--root', dirname(a.target), 'delete', '--force', a.containerId], ctx.signal);
    },
  },
  {
    kind: 'remove-socket',
    finding: 'stale-socket',
    description: 'unlink the socket file',
    precondition: 'still a socket file (not a symlink), nothing listens on it, and no shim of this containerd serves the id',
    plan(_f, ev, _opts) {
      return typeof ev.path === 'string' ? { target: ev.path } : undefined;
    },
    async act(a, ctx, observed) {
      const st = await lstat(a.target).catch(() => undefined);
      if (!st) throw new PreconditionFailed(`${a.target} is already gone`, observed);
      if (!st.isSocket()) throw new PreconditionFailed(`${a.target} is not a socket file`, observed);
      if (dirname(a.target) !== ctx.socketDir) throw new PreconditionFailed(`${a.target} is not in ${ctx.socketDir}`, observed);
      const listens = await listening(ctx, a.target);
      observed.listening = listens;
      if (listens) throw new PreconditionFailed(`something listens on ${a.target} now`, observed);
      const shims = await shimsOf(ctx, a.namespace, a.containerId);
      observed.shims = shims.map((s) => s.pid);
      if (shims.length > 0) throw new PreconditionFailed(`shim ${shims.map((s) => s.pid).join(', ')} of ${a.namespace}/${a.containerId} is alive`, observed);
      await unlink(a.target);
    },
  },
  {
    kind: 'remove-cgroup',
    finding: 'leftover-cgroup',
    description: 'rmdir each of its cgroup directories',
    precondition: 'containerd has no task for the container and the cgroup has no processes',
    plan(f, ev, _opts) {
      return Array.isArray(ev.cgroups) ? { target: `cgroup /${f.namespace}/${f.containerId}`, paths: ev.cgroups.map(String) } : undefined;
    },
    async act(a, ctx, observed) {
      await noTask(ctx, a.namespace, a.containerId, observed);
      for (const path of a.paths ?? []) {
        const procs = await readFile(join(path, 'cgroup.procs'), 'utf8').catch(() => undefined);
        if (procs === undefined) continue; // gone already
        if (procs.trim() !== '') throw new PreconditionFailed(`${path} has processes`, { ...observed, procs: procs.trim().split('\n') });
        await rmdir(path);
      }
    },
  },
  {
    kind: 'remove-container',
    finding: 'container-no-task',
    description: 'delete the container metadata, only with --remove-containers (not implemented yet: refused by its precondition)',
    precondition: 'containerd still has the container and no task for it',
    plan(f, _ev, opts) {
      return opts.removeContainers ? { target: `container ${f.namespace}/${f.containerId}` } : undefined;
    },
    async act(_a, _ctx, observed) {
      // Deleting container metadata also needs its snapshot removed through the snapshots service, which our proto
      // subset does not carry yet; refuse rather than leave a half-deleted container.
      throw new PreconditionFailed('remove-container is not implemented in this version', observed);
    },
  },
];

function rowOf(kind: ActionKind): ActionRow {
  const row = ACTIONS.find((r) => r.kind === kind);
  if (!row) throw new TransshipError('TS_REPAIR_FAILED', `no repair action ${kind}`);
  return row;
}

export async function execute(actions: Action[], ctx: RepairContext): Promise<ActionResult[]> {
  const results: ActionResult[] = [];
  for (const a of actions) {
    throwIfAborted(ctx.signal);
    const observed: Record<string, unknown> = {};
    let result: ActionResult;
    try {
      await withSpan(`containerd.doctor.${a.kind}`, { 'containerd.namespace': a.namespace, 'containerd.id': a.containerId }, () => rowOf(a.kind).act(a, ctx, observed));
      result = { action: a, outcome: 'done', observed };
    } catch (err) {
      if (err instanceof TransshipError && err.code === 'TS_CANCELLED') throw err;
      result = { action: a, outcome: err instanceof PreconditionFailed ? 'skipped' : 'failed', observed, error: errorSummary(err) };
    }
    containerdDoctorRepairActionsTotal.inc({ action: a.kind, outcome: result.outcome === 'skipped' ? 'skipped_precondition' : result.outcome });
    ctx.audit({ time: new Date().toISOString(), event: 'action', kind: a.kind, namespace: a.namespace, containerId: a.containerId, target: a.target, why: a.why, precondition: a.precondition, observed, outcome: result.outcome, ...(result.error ? { error: result.error } : {}) });
    results.push(result);
  }
  return results;
}

/** The audit line written before acting: what was seen. */
export function diagnosisRecord(d: Diagnosis, event: 'diagnosis' | 'after'): AuditRecord {
  return {
    time: new Date().toISOString(),
    event,
    address: d.snapshot.address,
    containerdReachable: d.snapshot.containerd.reachable,
    findings: d.findings.map((f) => ({ code: f.code, severity: f.severity, namespace: f.namespace, containerId: f.containerId, summary: f.summary, evidence: f.evidence })),
    blindSpots: d.blindSpots,
  };
}
