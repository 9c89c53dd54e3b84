// Correlation: bundles × shim processes × socket files × listeners × tasks × containers → findings. A pure function
// of the snapshot (see gather.ts), so every rule is unit-testable on fixtures and the repair can re-run it.
//
// Identity is (namespace, id). A shim is keyed by its group id; its socket name is the hash of (our address, ns,
// group id), so a socket file belongs to the containerd we judge only if its name is one of those hashes — sockets of
// other instances on the same host are never judged.
import { join } from 'node:path';
import { withSpan } from '@transship/core/tracing';
import { FINDING_CODES, SEVERITY_ORDER, type Finding, type FindingCode, type EvidenceValue } from './findings.js';
import { gather, type GatherOptions, type Snapshot, type ShimProcess, type TaskState, type ContainerState } from './gather.js';
import { isGone } from './procfs.js';
import { shimSocketPath } from './shim-socket.js';
import { TASK_DIR } from './bundles.js';
import { addLogEvidence } from './log-evidence.js';

export interface DiagnoseOptions {
  /** A task CREATED (or a container without task) longer than this is reported. */
  createdThresholdMs: number;
  /**
   * A bundle changed this recently, with no shim and no socket for it yet, is taken as still being written (containerd
   * writes config.json and launches `shim start` within milliseconds). Older, with no such evidence, it is leaked —
   * reported at once, not after an age (issue 16 defect 2).
   */
  minBundleAgeMs: number;
  now?: number | undefined;
}

export const DEFAULT_DIAGNOSE: DiagnoseOptions = { createdThresholdMs: 5 * 60_000, minBundleAgeMs: 1_000 };

function key(ns: string, id: string): string {
  return `${ns}\u0000${id}`;
}

function ctr(snap: Snapshot, ns: string, args: string): string {
  return `ctr --address ${snap.address} -n ${ns} ${args}`;
}

function finding(code: FindingCode, f: Omit<Finding, 'code' | 'severity'> & { severity?: Finding['severity'] }): Finding {
  return { code, severity: f.severity ?? FINDING_CODES[code].severity, ...f };
}

function describePid(snap: Snapshot, pid: number): string {
  const p = snap.processes.get(pid);
  return p ? `${pid} ${p.argv.join(' ').slice(0, 200)}` : `${pid} (not visible)`;
}

export function correlate(snap: Snapshot, opts: DiagnoseOptions = DEFAULT_DIAGNOSE): Finding[] {
  const now = opts.now ?? snap.takenAt;
  const findings: Finding[] = [];
  const reachable = snap.containerd.reachable;

  if (!reachable) {
    findings.push(
      finding('containerd-unreachable', {
        summary: `containerd does not answer on ${snap.address}`,
        evidence: { address: snap.address, error: snap.containerd.error ? `${snap.containerd.error.code}: ${snap.containerd.error.message}` : null, socketListening: snap.containerd.socketListening },
        see: [`ctr --address ${snap.address} version`, `ss -xlp | grep ${snap.address}`, 'journalctl -u containerd -n 50'],
        fix: 'manual: start or restart containerd',
      }),
    );
  }

  const containers = new Map<string, ContainerState>();
  for (const c of snap.containers) containers.set(key(c.namespace, c.id), c);
  const tasks = new Map<string, TaskState>();
  for (const t of snap.tasks) tasks.set(key(t.namespace, t.id), t);
  // group id → container ids (several for a pod), to know whether a shim still has work.
  const groupOf = (ns: string, id: string): string => containers.get(key(ns, id))?.groupId ?? id;
  const tasksByGroup = new Map<string, TaskState[]>();
  for (const t of snap.tasks) {
    const k = key(t.namespace, groupOf(t.namespace, t.id));
    const list = tasksByGroup.get(k);
    if (list) list.push(t);
    else tasksByGroup.set(k, [t]);
  }
  const containersByGroup = new Set(snap.containers.map((c) => key(c.namespace, c.groupId)));
  const shimsByGroup = new Map<string, ShimProcess[]>();
  for (const s of snap.shims) {
    const k = key(s.namespace, s.id);
    const list = shimsByGroup.get(k);
    if (list) list.push(s);
    else shimsByGroup.set(k, [s]);
  }
  const bundles = new Map(snap.bundles.map((b) => [key(b.namespace, b.id), b]));

  // Every (ns, group id) this containerd knows about, by the socket path its shim would use.
  const socketOwner = new Map<string, { ns: string; id: string }>();
  const addKnown = (ns: string, id: string): void => {
    socketOwner.set(shimSocketPath(snap.address, ns, id, snap.socketDir), { ns, id });
  };
  for (const c of snap.containers) addKnown(c.namespace, c.groupId);
  for (const t of snap.tasks) addKnown(t.namespace, groupOf(t.namespace, t.id));
  for (const b of snap.bundles) addKnown(b.namespace, groupOf(b.namespace, b.id));
  for (const s of snap.shims) addKnown(s.namespace, s.id);
  const judged = new Set(snap.namespaces);
  const shimOwns = (pids: number[], ns: string, id: string): boolean => pids.some((pid) => (shimsByGroup.get(key(ns, id)) ?? []).some((s) => s.pid === pid));

  /**
   * Evidence that containerd is creating (or cleaning up) a task for (ns, id) right now: a shim or a `shim start` /
   * `shim delete` run of this containerd for it, a listener on its socket path that is (or may be) its shim, or a
   * bundle changed within the last `minBundleAgeMs` (still being written). Empty: the bundle is left over.
   */
  const createInFlight = (ns: string, id: string, mtimeMs: number): string[] => {
    const gid = groupOf(ns, id);
    const out: string[] = [];
    if ((shimsByGroup.get(key(ns, gid)) ?? []).length > 0 || (shimsByGroup.get(key(ns, id)) ?? []).length > 0) out.push('shim process');
    if (snap.shimInvocations.some((x) => x.namespace === ns && (x.id === gid || x.id === id))) out.push('shim start/delete running');
    const l = snap.listeners.get(shimSocketPath(snap.address, ns, gid, snap.socketDir));
    if (l && (l.owners.length === 0 || shimOwns(l.owners, ns, gid))) out.push('socket listening');
    if (now - mtimeMs < opts.minBundleAgeMs) out.push('bundle being written');
    return out;
  };

  // --- attribution: runc state and cgroups are keyed by (ns, id) only, so another containerd instance using the same
  // namespace puts its containers in the same places. Whose is it: runc's `bundle=` (under which state dir), the
  // shim of another instance serving that id, or another instance's shim among the processes' ancestors. ---
  const taskRoot = join(snap.stateDir, TASK_DIR) + '/';
  const ourShimPids = new Set(snap.shims.map((s) => s.pid));
  const otherShimByPid = new Map(snap.otherShimList.map((s) => [s.pid, s]));
  const shimAbove = (pid: number): { ours: true } | { ours: false; address: string } | undefined => {
    let cur = pid;
    for (let depth = 0; depth < 64 && cur > 1; depth++) {
      if (ourShimPids.has(cur)) return { ours: true };
      const other = otherShimByPid.get(cur);
      if (other) return { ours: false, address: other.address };
      const p = snap.processes.get(cur);
      if (!p) return undefined;
      cur = p.ppid;
    }
    return undefined;
  };
  /** Another instance that owns (ns, id), described for a person; undefined when nothing says it is not ours. */
  const otherOwner = (ns: string, id: string, o: { bundle?: string | undefined; pids?: number[] }): string | undefined => {
    const shim = snap.otherShimList.find((s) => s.namespace === ns && s.id === id);
    if (shim) return shim.address;
    for (const pid of o.pids ?? []) {
      const above = shimAbove(pid);
      if (above && !above.ours) return above.address;
    }
    if (o.bundle !== undefined && o.bundle.startsWith('/') && !o.bundle.startsWith(taskRoot)) {
      const i = o.bundle.indexOf(`/${TASK_DIR}/`);
      return `the containerd with state dir ${i > 0 ? o.bundle.slice(0, i) : o.bundle}`;
    }
    return undefined;
  };
  const collisions = new Map<string, { ns: string; id: string; other: string; runcState: string | null; cgroups: string[]; pids: number[] }>();
  const collide = (ns: string, id: string, other: string, what: { runcState?: string; cgroups?: string[]; pids?: number[] }): void => {
    const k = key(ns, id);
    const c = collisions.get(k) ?? { ns, id, other, runcState: null, cgroups: [], pids: [] };
    if (what.runcState !== undefined) c.runcState = what.runcState;
    c.cgroups.push(...(what.cgroups ?? []));
    c.pids.push(...(what.pids ?? []).filter((p) => !c.pids.includes(p)));
    collisions.set(k, c);
  };

  // --- sockets: stale files and foreign listeners ---
  const checkedPaths = new Set<string>();
  for (const f of snap.socketFiles) {
    const owner = socketOwner.get(f.path);
    if (!owner || !judged.has(owner.ns)) continue;
    checkedPaths.add(f.path);
    const l = snap.listeners.get(f.path);
    if (!l) {
      if (!f.isSocket) continue; // not a socket: not ours to call stale; the create would fail on it, reported below
      findings.push(
        finding('stale-socket', {
          namespace: owner.ns,
          containerId: owner.id,
          summary: `shim socket of ${owner.ns}/${owner.id} exists but nothing listens on it`,
          evidence: { path: f.path, listening: false, shimAlive: (shimsByGroup.get(key(owner.ns, owner.id)) ?? []).length > 0, hashOf: join(snap.address, owner.ns, owner.id) },
          see: [`ls -l ${f.path}`, `ss -xlp | grep ${f.path}`],
          fix: 'remove-socket',
        }),
      );
    }
  }
  for (const [path, l] of snap.listeners) {
    const owner = socketOwner.get(path);
    if (!owner || !judged.has(owner.ns)) continue;
    if (shimOwns(l.owners, owner.ns, owner.id)) continue;
    const visible = l.owners.length > 0;
    findings.push(
      finding('foreign-listener', {
        namespace: owner.ns,
        containerId: owner.id,
        summary: visible
          ? `${owner.ns}/${owner.id}'s shim socket is held by pid ${l.owners.join(', ')}, not by its shim`
          : `${owner.ns}/${owner.id}'s shim socket has a listener that is not its shim (owner not visible)`,
        evidence: { path, listenerInodes: l.inodes, owners: l.owners.map((p) => describePid(snap, p)), expectedShim: `containerd-shim-* -namespace ${owner.ns} -id ${owner.id} -address ${snap.address}` },
        see: [`ss -xlp | grep ${path}`, ...l.owners.map((p) => `ps -o pid,ppid,lstart,args -p ${p}`)],
        fix: 'manual: stop the process holding the socket (it is not a shim of this containerd), then re-run doctor',
      }),
    );
  }

  // --- shims ---
  for (const s of snap.shims) {
    if (!reachable) {
      if (snap.containerd.socketListening) continue; // containerd is there but refused us: judge nothing
      findings.push(
        finding('orphaned-shim', {
          namespace: s.namespace,
          containerId: s.id,
          severity: 'warning',
          summary: `shim pid ${s.pid} of ${s.namespace}/${s.id} runs but its containerd is gone`,
          evidence: { pid: s.pid, cmdline: describePid(snap, s.pid), reason: 'containerd-gone', address: s.address, children: s.children },
          see: [`ps -o pid,ppid,lstart,args -p ${s.pid}`, `ss -xlp | grep ${s.address}`],
          fix: 'manual: restart containerd (it reconnects to its shims); do not kill shims of running containers',
        }),
      );
      continue;
    }
    if (!judged.has(s.namespace)) continue;
    const k = key(s.namespace, s.id);
    if ((tasksByGroup.get(k) ?? []).length > 0) continue;
    const containerGone = !containersByGroup.has(k);
    findings.push(
      finding('orphaned-shim', {
        namespace: s.namespace,
        containerId: s.id,
        summary: `shim pid ${s.pid} serves ${s.namespace}/${s.id}, which containerd has ${containerGone ? 'no container' : 'no task'} for`,
        evidence: {
          pid: s.pid,
          startTime: s.startTime,
          cmdline: describePid(snap, s.pid),
          reason: containerGone ? 'container-gone' : 'task-gone',
          children: s.children.map((c) => describePid(snap, c)),
          socket: shimSocketPath(snap.address, s.namespace, s.id, snap.socketDir),
          bundle: bundles.has(k) ? (bundles.get(k)?.dir ?? null) : null,
        },
        see: [`ps -o pid,ppid,lstart,args -p ${s.pid}`, `ps -o pid,args --ppid ${s.pid}`, ctr(snap, s.namespace, 'task ls')],
        fix: 'stop-shim',
      }),
    );
  }

  if (reachable) {
    // --- bundles and their mounts ---
    for (const b of snap.bundles) {
      const k = key(b.namespace, b.id);
      if (tasks.has(k)) continue;
      const age = now - b.mtimeMs;
      if (createInFlight(b.namespace, b.id, b.mtimeMs).length > 0) continue;
      const container = containers.get(k);
      const mounted = snap.mounts.filter((m) => m.mountPoint === b.dir || m.mountPoint.startsWith(b.dir + '/')).map((m) => m.mountPoint);
      const initAlive = b.initPid !== undefined && !isGone(snap.processes.get(b.initPid));
      findings.push(
        finding('leaked-bundle', {
          namespace: b.namespace,
          containerId: b.id,
          severity: container ? 'critical' : 'warning',
          summary: container
            ? `bundle of ${b.namespace}/${b.id} has no task: starting it fails with "mkdir ${b.dir}: file exists"`
            : `bundle of ${b.namespace}/${b.id} has no task and no container`,
          evidence: {
            dir: b.dir,
            containerExists: Boolean(container),
            address: b.address ? (b.address.kind === 'path' ? b.address.path : b.address.kind === 'abstract' ? b.address.name : `invalid: ${b.address.reason}`) : null,
            initPid: b.initPid ?? null,
            initAlive,
            mounted,
            ageSeconds: Math.round(age / 1000),
            inFlightEvidence: 'none: no task, no shim or shim start/delete run, no listening socket, not being written',
            work: b.work ?? null,
            problems: b.problems,
          },
          see: [`ls -la ${b.dir}`, ctr(snap, b.namespace, 'task ls'), `grep ${b.dir} /proc/self/mountinfo`],
          fix: 'remove-bundle',
        }),
      );
    }
    for (const m of snap.mounts) {
      const rel = m.mountPoint.slice(join(snap.stateDir, 'io.containerd.runtime.v2.task').length + 1).split('/');
      const [ns, id] = rel;
      if (ns === undefined || id === undefined || !judged.has(ns) || tasks.has(key(ns, id))) continue;
      const b = bundles.get(key(ns, id));
      if (b && createInFlight(ns, id, b.mtimeMs).length > 0) continue;
      findings.push(
        finding('leftover-rootfs-mount', {
          namespace: ns,
          containerId: id,
          summary: `${m.fsType} mount at ${m.mountPoint} outlived the task of ${ns}/${id}`,
          evidence: { mountPoint: m.mountPoint, fsType: m.fsType, source: m.source, mountId: m.id },
          see: [`findmnt ${m.mountPoint}`, ctr(snap, ns, 'task ls')],
          fix: 'unmount',
        }),
      );
    }

    // --- tasks ---
    for (const t of snap.tasks) {
      const gid = groupOf(t.namespace, t.id);
      const shims = (shimsByGroup.get(key(t.namespace, gid)) ?? []).filter((s) => !isGone(snap.processes.get(s.pid)));
      const sock = shimSocketPath(snap.address, t.namespace, gid, snap.socketDir);
      const listening = snap.listeners.has(sock);
      const b = bundles.get(key(t.namespace, t.id));
      if (shims.length === 0 && !listening) {
        findings.push(
          finding('task-shim-dead', {
            namespace: t.namespace,
            containerId: t.id,
            summary: `task ${t.namespace}/${t.id} is ${t.status} but its shim process is gone`,
            evidence: { status: t.status, pid: t.pid, socket: sock, socketListening: false, shimProcesses: 0 },
            see: [ctr(snap, t.namespace, 'task ls'), `ps -eo pid,args | grep 'containerd-shim.*-id ${gid} '`],
            fix: 'delete-task',
          }),
        );
        continue;
      }
      if (t.status === 'UNKNOWN') {
        findings.push(
          finding('task-unknown', {
            namespace: t.namespace,
            containerId: t.id,
            summary: `task ${t.namespace}/${t.id} is UNKNOWN: shim pid ${shims.map((s) => s.pid).join(', ') || '?'} does not answer`,
            evidence: { status: t.status, shims: shims.map((s) => `${describePid(snap, s.pid)} state=${snap.processes.get(s.pid)?.state ?? '?'}`), socket: sock, socketListening: listening },
            see: [ctr(snap, t.namespace, 'task ls'), ...shims.map((s) => `grep State /proc/${s.pid}/status`)],
            fix: 'manual: inspect the shim (State T = stopped, D = stuck in the kernel); killing it stops the container',
          }),
        );
        continue;
      }
      if (t.status === 'CREATED') {
        const age = b ? now - b.mtimeMs : undefined;
        if (age !== undefined && age >= opts.createdThresholdMs) {
          findings.push(
            finding('task-stuck-created', {
              namespace: t.namespace,
              containerId: t.id,
              summary: `task ${t.namespace}/${t.id} has been CREATED for ${Math.round(age / 1000)} s and never started`,
              evidence: { status: t.status, pid: t.pid, ageSeconds: Math.round(age / 1000), bundle: b?.dir ?? null },
              see: [ctr(snap, t.namespace, 'task ls'), ctr(snap, t.namespace, `task ps ${t.id}`)],
              fix: `manual: start it (${ctr(snap, t.namespace, `task start ${t.id}`)}) or delete it (${ctr(snap, t.namespace, `task delete ${t.id}`)})`,
            }),
          );
        }
      }
    }

    // --- containers without task ---
    for (const c of snap.containers) {
      const k = key(c.namespace, c.id);
      if (tasks.has(k) || bundles.has(k)) continue; // with a bundle, leaked-bundle says it better
      const age = c.createdAt ? now - c.createdAt.getTime() : undefined;
      if (age === undefined || age < opts.createdThresholdMs) continue;
      findings.push(
        finding('container-no-task', {
          namespace: c.namespace,
          containerId: c.id,
          summary: `container ${c.namespace}/${c.id} has no task (created ${Math.round(age / 1000)} s ago)`,
          evidence: { image: c.image, runtime: c.runtime, createdAt: c.createdAt?.toISOString() ?? null },
          see: [ctr(snap, c.namespace, 'container info ' + c.id), ctr(snap, c.namespace, 'task ls')],
          fix: 'remove-container (only with --remove-containers)',
        }),
      );
    }

    // --- runc state left by a shim that died without `runc delete` ---
    for (const r of snap.runcStates) {
      const k = key(r.namespace, r.id);
      if (!judged.has(r.namespace) || tasks.has(k)) continue;
      const init = r.initPid !== undefined ? snap.processes.get(r.initPid) : undefined;
      const initAlive = !isGone(init) && (r.initStart === undefined || init?.startTime === r.initStart);
      // Another instance's container: never judged; a hazard only when this instance uses the same id too.
      const other = otherOwner(r.namespace, r.id, { bundle: r.bundle, pids: initAlive && r.initPid !== undefined ? [r.initPid] : [] });
      if (other !== undefined) {
        if (containers.has(k)) collide(r.namespace, r.id, other, { runcState: r.dir });
        continue;
      }
      // A live init under an orphaned shim of ours is that shim's container: orphaned-shim already says it.
      if (initAlive && (shimsByGroup.get(key(r.namespace, groupOf(r.namespace, r.id))) ?? []).length > 0) continue;
      const container = containers.has(k);
      findings.push(
        finding('leftover-runc-state', {
          namespace: r.namespace,
          containerId: r.id,
          severity: initAlive ? 'warning' : container ? 'critical' : 'warning',
          summary: initAlive
            ? `runc state of ${r.namespace}/${r.id} has a live init (pid ${r.initPid}) but containerd has no task (another containerd instance, or escaped processes)`
            : `runc state of ${r.namespace}/${r.id} outlived its task${container ? ': creating the task again fails with "container with given ID already exists"' : ''}`,
          evidence: { dir: r.dir, initPid: r.initPid ?? null, initAlive, bundle: r.bundle ?? null, containerExists: container, problem: r.problem ?? null },
          see: [`runc --root ${join(snap.runcRoot, r.namespace)} list`, `runc --root ${join(snap.runcRoot, r.namespace)} state ${r.id}`],
          fix: initAlive ? 'manual: find out whose container this is before deleting it' : 'runc-delete',
        }),
      );
    }

    // --- cgroups named after containers without a task ---
    for (const cg of snap.cgroups) {
      if (!judged.has(cg.namespace) || tasks.has(key(cg.namespace, cg.id))) continue;
      const live = cg.pids.filter((p) => !isGone(snap.processes.get(p)));
      const other = otherOwner(cg.namespace, cg.id, { pids: live });
      if (other !== undefined) {
        if (containers.has(key(cg.namespace, cg.id))) collide(cg.namespace, cg.id, other, { cgroups: cg.paths, pids: live });
        continue;
      }
      // Processes under an orphaned shim of ours: orphaned-shim already says it (and stop-shim stops them).
      if (live.length > 0 && live.every((p) => shimAbove(p)?.ours === true)) continue;
      if (live.length > 0) {
        findings.push(
          finding('stray-container-processes', {
            namespace: cg.namespace,
            containerId: cg.id,
            summary: `${live.length} process(es) still run in the cgroup of ${cg.namespace}/${cg.id}, which has no task`,
            evidence: { cgroups: cg.paths, pids: live.map((p) => describePid(snap, p)), containerExists: containers.has(key(cg.namespace, cg.id)) },
            see: cg.paths.slice(0, 1).map((p) => `cat ${p}/cgroup.procs`),
            fix: 'manual: these processes escaped their shim; stop them once you know what they are',
          }),
        );
      } else {
        findings.push(
          finding('leftover-cgroup', {
            namespace: cg.namespace,
            containerId: cg.id,
            summary: `empty cgroup of ${cg.namespace}/${cg.id} left after its task`,
            evidence: { cgroups: cg.paths, containerExists: containers.has(key(cg.namespace, cg.id)) },
            see: cg.paths.slice(0, 1).map((p) => `ls ${p}`),
            fix: 'remove-cgroup',
          }),
        );
      }
    }
  }

  for (const c of collisions.values()) {
    findings.push(
      finding('instance-collision', {
        namespace: c.ns,
        containerId: c.id,
        summary: `${c.ns}/${c.id} is a container of this containerd (${snap.address}) and of another instance (${c.other}); runc state and cgroups of that id are shared`,
        evidence: { thisInstance: snap.address, otherInstance: c.other, runcState: c.runcState, cgroups: c.cgroups, pids: c.pids.map((p) => describePid(snap, p)) },
        see: [ctr(snap, c.ns, 'container ls'), `ps -eo pid,args | grep 'containerd-shim.*-id ${c.id} '`, ...(c.runcState ? [`cat ${c.runcState}/state.json`] : [])],
        fix: 'manual: give the instances different namespaces (or runc roots and cgroup parents); the doctor leaves these objects to their owner',
      }),
    );
  }

  for (const s of snap.suspicious) {
    findings.push(
      finding('suspicious-state-entry', {
        namespace: s.namespace,
        containerId: s.id,
        summary: `${s.path}: ${s.reason}`,
        evidence: { path: s.path, reason: s.reason },
        see: [`ls -la ${s.path}`],
        fix: 'manual: containerd did not write this; inspect it before removing anything',
      }),
    );
  }

  findings.sort((a, b) => SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity] || a.code.localeCompare(b.code) || (a.namespace ?? '').localeCompare(b.namespace ?? '') || (a.containerId ?? '').localeCompare(b.containerId ?? ''));
  return findings;
}

export interface Diagnosis {
  snapshot: Snapshot;
  findings: Finding[];
  /** Things the doctor could not see, summarised for the report. */
  blindSpots: string[];
  durationMs: number;
}

export function summarizeBlindSpots(snap: Snapshot): string[] {
  const byReason = new Map<string, string[]>();
  for (const b of snap.blind) {
    const k = b.what.replace(/\/proc\/\d+\//, '/proc/<pid>/').replace(/\/proc\/\d+$/, '/proc/<pid>') + ` (${b.reason})`;
    const list = byReason.get(k) ?? [];
    list.push(b.what);
    byReason.set(k, list);
  }
  return [...byReason.entries()].map(([k, v]) => (v.length > 1 ? `${k} ×${v.length}` : k));
}

export async function diagnose(opts: GatherOptions & Partial<DiagnoseOptions> & { logs?: boolean }): Promise<Diagnosis> {
  return withSpan('containerd.doctor.diagnose', { 'containerd.address': opts.address }, async (span) => {
    const started = performance.now();
    const snapshot = await gather(opts);
    const findings = correlate(snapshot, { ...DEFAULT_DIAGNOSE, ...definedOnly(opts) });
    const blindSpots = summarizeBlindSpots(snapshot);
    if (opts.logs !== false && findings.some((f) => f.containerId !== undefined)) blindSpots.push(...(await addLogEvidence(findings, snapshot, opts.signal)));
    span.setAttribute('containerd.findings', findings.length);
    return { snapshot, findings, blindSpots, durationMs: performance.now() - started };
  });
}

function definedOnly(o: Partial<DiagnoseOptions>): Partial<DiagnoseOptions> {
  const out: Partial<DiagnoseOptions> = {};
  if (o.createdThresholdMs !== undefined) out.createdThresholdMs = o.createdThresholdMs;
  if (o.minBundleAgeMs !== undefined) out.minBundleAgeMs = o.minBundleAgeMs;
  if (o.now !== undefined) out.now = o.now;
  return out;
}

export type { EvidenceValue };
