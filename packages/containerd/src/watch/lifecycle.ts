// One trace per container, built from containerd's events: a `containerd.container` span from container create to
// container delete (or to the end of the post-delete leak check, whichever is later), with one child span per
// lifecycle step. Each child covers the phase that ends with its event, so the trace reads as a timeline:
//
//   containerd.container.create   instant, at /containers/create (image, runtime)
//   containerd.task.create        bundle written → /tasks/create: shim launch + runc create (shim socket, shim pid,
//                                 whether the socket listens)
//   containerd.task.start         /tasks/create → /tasks/start: time spent CREATED
//   containerd.task.exec          /tasks/exec-added → that exec's /tasks/exit (exec id, pid, exit status)
//   containerd.task.oom           instant, at /tasks/oom
//   containerd.task.exit          /tasks/start → /tasks/exit of the init: the run (exit status, oom, shim alive)
//   containerd.task.delete        /tasks/exit → /tasks/delete: time spent exited
//   containerd.leak_check         /tasks/delete → end of the post-delete check (what was released, what leaked)
//   containerd.container.delete   /tasks/delete (or the last step) → /containers/delete
//
// Times are containerd's publish timestamps, not the watcher's processing time, so a lagging watcher still draws
// the right timeline. The class holds no I/O: host facts come in with the events (TaskHostInfo), so unit tests
// drive it with plain objects and an in-memory span exporter.
import { ROOT_CONTEXT, SpanStatusCode, trace, type Attributes, type Context, type Span, type Tracer } from '@opentelemetry/api';
import { containerdWatchContainersTracked, containerdWatchOomKillsTotal, containerdWatchPhaseDurationSeconds, containerdWatchReconciledTotal, containerdWatchTaskExitsTotal } from '../metrics.js';
import type { WatchEvent } from './events.js';
import type { ShimRef, TaskHostInfo } from './host.js';
import type { LeakCheckResult } from './leak-check.js';

export type TaskState = 'created' | 'running' | 'paused' | 'exited' | 'deleted';

export interface TaskTrack {
  pid: number;
  createdAt: number;
  startedAt?: number | undefined;
  exitedAt?: number | undefined;
  exitStatus?: number | undefined;
  deletedAt?: number | undefined;
  state: TaskState;
  oom: boolean;
  host?: TaskHostInfo | undefined;
  /** Stuck/dead detection bookkeeping (stuck.ts). */
  initGoneSince?: number | undefined;
  shimGoneSince?: number | undefined;
  reported: Set<string>;
  shimDied: boolean;
  /** A SIGKILL exit waiting for a late OOM event before it is written (see exit()); `since` is local time. */
  pendingExit?: { at: number; status: number; pid: number; attrs: Attributes; since: number } | undefined;
}

/**
 * How long a SIGKILL exit (status 137) waits for its OOM event. containerd publishes /tasks/oom from the shim's
 * cgroup watch and /tasks/exit from its reaper; the two race, and now and then the OOM comes second (seen on this
 * machine: 1 in ~30 runs). Waiting a little for it is what makes "exit 137 marked oom" a fact rather than luck.
 */
export const OOM_WAIT_MS = 1500;

export interface ContainerTrack {
  namespace: string;
  id: string;
  image: string;
  runtime: string;
  createdAt: number;
  /** False when the watcher learned of the container from a later event or a reconcile. */
  createObserved: boolean;
  root: Span;
  ctx: Context;
  task?: TaskTrack | undefined;
  execs: Map<string, { addedAt: number; pid?: number }>;
  deletedAt?: number | undefined;
  leakCheckPending: boolean;
  /** Time of the last event applied (stream or reconcile). */
  lastEventAt: number;
  lastStepAt: number;
}

export interface LifecycleHooks {
  /** The init task was deleted: run the post-delete leak check. */
  taskDeleted?(c: ContainerTrack, t: TaskTrack, at: number): void;
  /** A task was created and its host facts are known (the shim to watch). */
  taskCreated?(c: ContainerTrack, t: TaskTrack): void;
  /** The container's trace ended: forget whatever is keyed by it. */
  ended?(c: ContainerTrack): void;
  /** An exit is waiting for a late OOM event: call flushExits() in OOM_WAIT_MS. */
  exitDeferred?(c: ContainerTrack): void;
}

export function trackKey(namespace: string, id: string): string {
  return `${namespace}\u0000${id}`;
}

function observe(phase: string, fromMs: number | undefined, toMs: number): void {
  if (fromMs === undefined || toMs < fromMs) return;
  containerdWatchPhaseDurationSeconds.observe({ phase }, (toMs - fromMs) / 1000);
}

/** How long late events of a closed container are ignored (instead of opening a second trace for it). */
const CLOSED_MEMORY_MS = 60_000;

export class Lifecycles {
  private readonly tracks = new Map<string, ContainerTrack>();
  /** Recently closed containers → when (insertion-ordered, so pruning stops at the first young entry). */
  private readonly closed = new Map<string, number>();

  constructor(
    private readonly tracer: Tracer,
    private readonly hooks: LifecycleHooks = {},
  ) {}

  get size(): number {
    return this.tracks.size;
  }

  get(namespace: string, id: string): ContainerTrack | undefined {
    return this.tracks.get(trackKey(namespace, id));
  }

  all(): IterableIterator<ContainerTrack> {
    return this.tracks.values();
  }

  private step(c: ContainerTrack, name: string, start: number, end: number, attributes: Attributes = {}, error?: string): Span {
    const span = this.tracer.startSpan(name, { startTime: Math.min(start, end), attributes: { 'containerd.namespace': c.namespace, 'container.id': c.id, ...attributes } }, c.ctx);
    if (error) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
    span.end(end);
    c.lastStepAt = Math.max(c.lastStepAt, end);
    return span;
  }

  /** Starts following a container (from its create event, a later event, or a reconcile). */
  private open(namespace: string, id: string, at: number, o: { image?: string; runtime?: string; observed: boolean; reconciled?: boolean }): ContainerTrack {
    const root = this.tracer.startSpan(
      'containerd.container',
      {
        root: true,
        startTime: at,
        attributes: {
          'containerd.namespace': namespace,
          'container.id': id,
          'container.image.name': o.image ?? '',
          'containerd.runtime': o.runtime ?? '',
          'containerd.create_observed': o.observed,
          ...(o.reconciled ? { 'containerd.reconciled': true } : {}),
        },
      },
      ROOT_CONTEXT,
    );
    const c: ContainerTrack = {
      namespace,
      id,
      image: o.image ?? '',
      runtime: o.runtime ?? '',
      createdAt: at,
      createObserved: o.observed,
      root,
      ctx: trace.setSpan(ROOT_CONTEXT, root),
      execs: new Map(),
      leakCheckPending: false,
      lastEventAt: at,
      lastStepAt: at,
    };
    this.tracks.set(trackKey(namespace, id), c);
    containerdWatchContainersTracked.set(this.tracks.size);
    return c;
  }

  /** Adopts a container that existed before the watcher saw it (startup, or created while disconnected). */
  adopt(namespace: string, id: string, createdAt: number, o: { image: string; runtime: string; reconciled: boolean }): ContainerTrack {
    const existing = this.get(namespace, id);
    if (existing) return existing;
    if (o.reconciled) containerdWatchReconciledTotal.inc({ transition: 'container_create' });
    return this.open(namespace, id, createdAt, { ...o, observed: false });
  }

  /** Adopts a task that existed before the watcher saw it (startup or reconnect), in the state the API reports. */
  adoptTask(c: ContainerTrack, t: { pid: number; status: TaskState; at: number; exitStatus?: number | undefined; exitedAt?: number | undefined }, host: TaskHostInfo | undefined): TaskTrack {
    c.task = { pid: t.pid, createdAt: t.at, state: t.status, oom: false, host, reported: new Set(), shimDied: false, ...(t.status !== 'created' ? { startedAt: t.at } : {}), exitStatus: t.exitStatus, exitedAt: t.exitedAt };
    this.hooks.taskCreated?.(c, c.task);
    return c.task;
  }

  apply(ev: WatchEvent, host?: TaskHostInfo): ContainerTrack | undefined {
    if (ev.kind === 'other') return undefined;
    const r = ev.reconciled ? { 'containerd.reconciled': true } : {};
    if (ev.reconciled) containerdWatchReconciledTotal.inc({ transition: ev.kind.replace('-', '_') });
    if (ev.kind === 'container-create') {
      const existing = this.get(ev.namespace, ev.id);
      if (existing) return existing; // adopted by a reconcile that ran before this event was processed
      const c = this.open(ev.namespace, ev.id, ev.at, { image: ev.image, runtime: ev.runtime, observed: true });
      this.step(c, 'containerd.container.create', ev.at, ev.at, { 'container.image.name': ev.image, 'containerd.runtime': ev.runtime, ...r });
      return c;
    }
    // Every other event names a container we may not have seen created (watcher started later, or a dropped event) —
    // or one a reconcile just closed, whose own events were still in flight: those are late, not new.
    const existing = this.get(ev.namespace, ev.id);
    if (!existing && (ev.kind === 'container-delete' || this.recentlyClosed(trackKey(ev.namespace, ev.id), ev.at))) return undefined;
    const c = existing ?? this.open(ev.namespace, ev.id, ev.at, { observed: false });
    if (!c) return undefined;
    c.lastEventAt = Math.max(c.lastEventAt, ev.at);
    const t = c.task;
    switch (ev.kind) {
      case 'task-create': {
        if (t && t.state !== 'deleted') return c; // duplicate (reconcile already adopted it)
        const started = host?.bundleWrittenAt !== undefined && host.bundleWrittenAt <= ev.at ? host.bundleWrittenAt : ev.at;
        c.task = { pid: ev.pid, createdAt: ev.at, state: 'created', oom: false, host, reported: new Set(), shimDied: false };
        if (c.createObserved && !t) observe('prepare', c.createdAt, started);
        observe('task_create', started, ev.at);
        this.step(c, 'containerd.task.create', started, ev.at, {
          'process.pid': ev.pid,
          'containerd.bundle': ev.bundle,
          ...(host
            ? {
                'containerd.shim.socket': host.socket,
                'containerd.shim.socket_listening': host.socketListening,
                'containerd.shim.group': host.groupId,
                ...(host.shim ? { 'containerd.shim.pid': host.shim.pid } : {}),
              }
            : {}),
          ...r,
        });
        c.root.setAttribute('containerd.shim.socket', host?.socket ?? '');
        if (host?.shim) c.root.setAttribute('containerd.shim.pid', host.shim.pid);
        this.hooks.taskCreated?.(c, c.task);
        return c;
      }
      case 'task-start': {
        if (!t || t.state !== 'created') return c;
        t.state = 'running';
        t.startedAt = ev.at;
        t.pid = ev.pid || t.pid;
        observe('created', t.createdAt, ev.at);
        this.step(c, 'containerd.task.start', t.createdAt, ev.at, { 'process.pid': t.pid, ...r });
        return c;
      }
      case 'task-paused':
        if (t && t.state === 'running') t.state = 'paused';
        return c;
      case 'task-resumed':
        if (t && t.state === 'paused') t.state = 'running';
        return c;
      case 'exec-added':
        c.execs.set(ev.execId, { addedAt: ev.at });
        return c;
      case 'exec-started': {
        const e = c.execs.get(ev.execId) ?? { addedAt: ev.at };
        e.pid = ev.pid;
        c.execs.set(ev.execId, e);
        return c;
      }
      case 'task-oom': {
        containerdWatchOomKillsTotal.inc({ namespace: c.namespace });
        if (t) t.oom = true;
        this.step(c, 'containerd.task.oom', ev.at, ev.at, { ...r }, 'OOM kill');
        c.root.setAttribute('containerd.oom', true);
        if (t?.pendingExit) this.writeExit(c, t);
        return c;
      }
      case 'task-exit': {
        if (ev.execId !== ev.id) {
          const e = c.execs.get(ev.execId);
          c.execs.delete(ev.execId);
          this.step(c, 'containerd.task.exec', e?.addedAt ?? ev.exitedAt, ev.exitedAt, { 'containerd.exec.id': ev.execId, 'process.pid': ev.pid, 'process.exit.code': ev.exitStatus, ...r });
          return c;
        }
        if (!t || t.state === 'exited' || t.state === 'deleted') return c;
        return this.exit(c, t, ev.exitedAt, ev.exitStatus, ev.pid, r);
      }
      case 'task-delete': {
        if (!t || t.state === 'deleted') return c;
        if (t.pendingExit) this.writeExit(c, t);
        if (t.state !== 'exited') this.exit(c, t, ev.at, ev.exitStatus, ev.pid, { 'containerd.exit_event_missing': true, ...r });
        t.state = 'deleted';
        t.deletedAt = ev.at;
        observe('exited', t.exitedAt, ev.at);
        this.step(c, 'containerd.task.delete', t.exitedAt ?? ev.at, ev.at, { 'process.pid': t.pid, 'process.exit.code': t.exitStatus ?? ev.exitStatus, ...r });
        c.leakCheckPending = true;
        this.hooks.taskDeleted?.(c, t, ev.at);
        return c;
      }
      case 'container-delete': {
        if (c.deletedAt !== undefined) return c;
        // A container deleted with a task we never saw deleted: the delete event was lost; close the task first.
        if (t && t.state !== 'deleted') this.apply({ kind: 'task-delete', namespace: c.namespace, id: c.id, at: ev.at, pid: t.pid, exitStatus: t.exitStatus ?? 0, reconciled: true });
        c.deletedAt = ev.at;
        observe('container_delete', t?.deletedAt, ev.at);
        observe('lifetime', c.createObserved ? c.createdAt : undefined, ev.at);
        this.step(c, 'containerd.container.delete', t?.deletedAt ?? ev.at, ev.at, { ...r });
        this.maybeEnd(c);
        return c;
      }
    }
  }

  /** The shim of a task found after its create span was written: recorded for the dead-shim checks and on the trace. */
  shimFound(c: ContainerTrack, t: TaskTrack, shim: ShimRef): void {
    if (!t.host) return;
    t.host.shim = shim;
    c.root.setAttribute('containerd.shim.pid', shim.pid);
    this.hooks.taskCreated?.(c, t);
  }

  /**
   * Marks the init exit (from the event, or inferred from a delete / a reconcile). A SIGKILL exit not known to be an
   * OOM kill is written only once its OOM event came, the task is deleted, or OOM_WAIT_MS passed (flushExits).
   */
  private exit(c: ContainerTrack, t: TaskTrack, at: number, status: number, pid: number, attrs: Attributes): ContainerTrack {
    t.state = 'exited';
    t.exitedAt = at;
    t.exitStatus = status;
    t.pendingExit = { at, status, pid, attrs, since: Date.now() };
    if (status === 137 && !t.oom && !t.shimDied) {
      this.hooks.exitDeferred?.(c);
      return c;
    }
    return this.writeExit(c, t);
  }

  /** Writes exits that waited OOM_WAIT_MS (or `waitMs`) for an OOM event that did not come. */
  flushExits(now = Date.now(), waitMs = OOM_WAIT_MS): void {
    for (const c of this.tracks.values()) {
      const p = c.task?.pendingExit;
      if (c.task && p && now - p.since >= waitMs) this.writeExit(c, c.task);
    }
  }

  private writeExit(c: ContainerTrack, t: TaskTrack): ContainerTrack {
    const p = t.pendingExit;
    if (!p) return c;
    t.pendingExit = undefined;
    const { at, status, pid, attrs } = p;
    observe('running', t.startedAt, at);
    const outcome = t.shimDied ? 'shim_died' : t.oom ? 'oom' : status === 0 ? 'zero' : 'nonzero';
    containerdWatchTaskExitsTotal.inc({ namespace: c.namespace, outcome });
    const error = t.shimDied ? 'shim died' : t.oom ? 'OOM killed' : undefined;
    this.step(c, 'containerd.task.exit', t.startedAt ?? t.createdAt, at, { 'process.pid': pid || t.pid, 'process.exit.code': status, 'containerd.oom': t.oom, 'containerd.shim.died': t.shimDied, ...attrs }, error);
    c.root.setAttribute('process.exit.code', status);
    return c;
  }

  /** Records the post-delete leak check as a child span and ends the trace if the container is gone too. */
  leakChecked(res: LeakCheckResult): void {
    const c = this.get(res.target.namespace, res.target.id);
    if (!c || !c.task?.deletedAt) return;
    const r = res.report;
    const end = c.task.deletedAt + res.checkedAfterMs;
    this.step(
      c,
      'containerd.leak_check',
      c.task.deletedAt,
      end,
      {
        'containerd.released.shim': r.shimExited ?? 'not_checked',
        'containerd.released.socket': r.socketRemoved ?? 'not_checked',
        'containerd.released.bundle': r.bundleRemoved,
        'containerd.released.rootfs': r.rootfsMounts.length === 0,
        'containerd.released.cgroup': r.cgroupsRemoved,
        'containerd.released.runc_state': r.runcStateRemoved,
        'containerd.leaks': res.findings.map((f) => f.code),
      },
      res.findings.length > 0 ? `leaked: ${res.findings.map((f) => f.code).join(', ')}` : undefined,
    );
    if (res.findings.length > 0) c.root.setAttribute('containerd.leaks', res.findings.map((f) => f.code));
    c.leakCheckPending = false;
    this.maybeEnd(c);
  }

  private maybeEnd(c: ContainerTrack): void {
    if (c.deletedAt === undefined || c.leakCheckPending) return;
    if (c.task?.shimDied) c.root.setStatus({ code: SpanStatusCode.ERROR, message: 'shim died' });
    c.root.end(Math.max(c.deletedAt, c.lastStepAt));
    const key = trackKey(c.namespace, c.id);
    this.tracks.delete(key);
    this.closed.delete(key);
    this.closed.set(key, Date.now());
    for (const [k, at] of this.closed) {
      if (Date.now() - at < CLOSED_MEMORY_MS) break;
      this.closed.delete(k);
    }
    containerdWatchContainersTracked.set(this.tracks.size);
    this.hooks.ended?.(c);
  }

  private recentlyClosed(key: string, eventAt: number): boolean {
    const at = this.closed.get(key);
    // An event published before the close (containerd's clock) is late; one published well after is a new life.
    return at !== undefined && eventAt <= at + 1000 && Date.now() - at < CLOSED_MEMORY_MS;
  }

  /** Ends every open trace (shutdown), marking them unfinished, so an exporter flush still sends them. */
  closeAll(at = Date.now()): void {
    this.flushExits(Infinity);
    for (const c of this.tracks.values()) {
      c.root.setAttribute('containerd.watch_stopped', true);
      c.root.end(Math.max(at, c.lastStepAt));
    }
    this.tracks.clear();
    containerdWatchContainersTracked.set(0);
  }
}
