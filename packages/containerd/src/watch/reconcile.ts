// Reconcile: compare what containerd's API says now with what the watcher followed, and turn every difference into
// the transition the event stream did not deliver (while disconnected, before the watcher started, or dropped by the
// bounded queue). Pure: the API view comes in as data, transitions go out as WatchEvents marked `reconciled`, and
// the lifecycle applies them like any other event — so a missed exit still gets its span, its metric and its leak
// check.
//
// Races: on a busy node the API answers ahead of the event stream — a container the list shows may have its create
// event still in flight, one it no longer shows its delete events. Acting on those would invent "missed" transitions
// and split one container into two traces. So the watcher applies the events queued when the API answered first,
// and a *periodic* reconcile acts only on a difference it already saw at the previous periodic reconcile (and adopts
// only containers older than `settleMs`). After a (re)subscribe or dropped events, events really were lost: those
// reconciles act at once, and the lifecycle ignores late events of containers it just closed.
import type { ProcessMessage, TaskStatus } from '../client.js';
import type { WatchEvent } from './events.js';
import type { ContainerTrack, TaskState } from './lifecycle.js';
import { trackKey } from './lifecycle.js';

export interface ApiContainer {
  namespace: string;
  id: string;
  image: string;
  runtime: string;
  createdAt: number | undefined;
}

export interface ApiTask {
  namespace: string;
  id: string;
  pid: number;
  status: TaskStatus;
  exitStatus: number;
  exitedAt: number | undefined;
}

export interface ApiView {
  takenAt: number;
  namespaces: string[];
  containers: ApiContainer[];
  tasks: ApiTask[];
}

export type Adoption = { container: ApiContainer; task: ApiTask | undefined };

export interface ReconcileOptions {
  /**
   * Keys (trackKey) found different at the previous periodic reconcile. When given, only those differences are acted
   * on and new ones are returned in `suspects`; when undefined (after a subscribe or drops), every one is acted on.
   */
  confirmed?: Set<string> | undefined;
  /** Containers created this recently are left to their own events (periodic reconciles only). */
  settleMs?: number;
}

export interface ReconcilePlan {
  /** Differences seen for the first time (periodic reconciles): acted on next time if they persist. */
  suspects: Set<string>;
  /** Containers (and their tasks) the watcher does not follow yet. */
  adopt: Adoption[];
  /** Tasks of followed containers that the watcher has not seen created. */
  adoptTasks: Array<{ track: ContainerTrack; task: ApiTask }>;
  /** Missed transitions, in the order to apply them. */
  events: WatchEvent[];
}

export function taskStateOf(status: TaskStatus): TaskState {
  switch (status) {
    case 'CREATED':
      return 'created';
    case 'STOPPED':
      return 'exited';
    case 'PAUSED':
    case 'PAUSING':
      return 'paused';
    default:
      return 'running'; // RUNNING, and UNKNOWN (a hung shim: the task exists, its state cannot be asked)
  }
}

export function toApiTask(namespace: string, t: ProcessMessage, exitedAt: number | undefined): ApiTask {
  // Tasks.List names the container in `id` (container_id stays empty there).
  return { namespace, id: t.container_id || t.id, pid: t.pid, status: t.status, exitStatus: t.exit_status, exitedAt };
}

export function planReconcile(view: ApiView, tracks: Iterable<ContainerTrack>, opts: ReconcileOptions = {}): ReconcilePlan {
  const at = view.takenAt;
  const periodic = opts.confirmed !== undefined;
  const settle = periodic ? (opts.settleMs ?? 2000) : 0;
  const containers = new Map(view.containers.map((c) => [trackKey(c.namespace, c.id), c]));
  const tasks = new Map(view.tasks.map((t) => [trackKey(t.namespace, t.id), t]));
  const judged = new Set(view.namespaces);
  const plan: ReconcilePlan = { suspects: new Set(), adopt: [], adoptTasks: [], events: [] };
  /** Whether to act on a difference now (immediate reconciles, or a periodic one that saw it last time too). */
  const act = (k: string): boolean => {
    if (!periodic || opts.confirmed?.has(k)) return true;
    plan.suspects.add(k);
    return false;
  };
  const followed = new Set<string>();
  for (const c of tracks) {
    const k = trackKey(c.namespace, c.id);
    followed.add(k);
    if (!judged.has(c.namespace) || c.deletedAt !== undefined) continue;
    const base = { namespace: c.namespace, id: c.id, at, reconciled: true } as const;
    const api = tasks.get(k);
    const t = c.task;
    const live = t && t.state !== 'deleted';
    if (!containers.has(k)) {
      if (!act(k)) continue;
      // Gone entirely: the lifecycle closes the task (exit + delete) before the container.
      if (live && t.state !== 'exited') plan.events.push({ ...base, kind: 'task-exit', execId: c.id, pid: t.pid, exitStatus: 255, exitedAt: at });
      plan.events.push({ ...base, kind: 'container-delete' });
      continue;
    }
    if (live && !api) {
      if (!act(k)) continue;
      if (t.state !== 'exited') plan.events.push({ ...base, kind: 'task-exit', execId: c.id, pid: t.pid, exitStatus: 255, exitedAt: at });
      plan.events.push({ ...base, kind: 'task-delete', pid: t.pid, exitStatus: t.exitStatus ?? 255 });
      continue;
    }
    if (!api) continue;
    if (!live) {
      if (!act(k)) continue;
      plan.adoptTasks.push({ track: c, task: api });
      continue;
    }
    const now = taskStateOf(api.status);
    const behind = (t.state === 'created' && now !== 'created') || ((t.state === 'running' || t.state === 'paused') && now === 'exited');
    if (!behind || !act(k)) continue;
    if (t.state === 'created' && (now === 'running' || now === 'paused' || now === 'exited')) plan.events.push({ ...base, kind: 'task-start', pid: api.pid });
    if ((t.state === 'created' || t.state === 'running' || t.state === 'paused') && now === 'exited') {
      plan.events.push({ ...base, kind: 'task-exit', execId: c.id, pid: api.pid || t.pid, exitStatus: api.exitStatus, exitedAt: api.exitedAt ?? at });
    }
  }
  for (const [k, c] of containers) {
    if (followed.has(k)) continue;
    if (periodic && (c.createdAt === undefined || c.createdAt > at - settle) && !opts.confirmed?.has(k)) {
      plan.suspects.add(k);
      continue;
    }
    plan.adopt.push({ container: c, task: tasks.get(k) });
  }
  return plan;
}
