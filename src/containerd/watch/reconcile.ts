// Reconcile: compare what containerd's API says now with what the watcher followed, and turn every difference into
// the transition the event stream did not deliver (while disconnected, before the watcher started, or dropped by the
// bounded queue). Pure: the API view comes in as data, transitions go out as WatchEvents marked `reconciled`, and
// the lifecycle applies them like any other event — so a missed exit still gets its span, its metric and its leak
// check.
//
// Race note: the watcher applies a reconcile after the events already queued at the time the API answered, so only
// an event still in flight on the socket at that instant can be applied twice (the second is ignored, the count of
// reconciled transitions is one too high).
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

export interface ReconcilePlan {
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

export function planReconcile(view: ApiView, tracks: Iterable<ContainerTrack>): ReconcilePlan {
  const at = view.takenAt;
  const containers = new Map(view.containers.map((c) => [trackKey(c.namespace, c.id), c]));
  const tasks = new Map(view.tasks.map((t) => [trackKey(t.namespace, t.id), t]));
  const judged = new Set(view.namespaces);
  const plan: ReconcilePlan = { adopt: [], adoptTasks: [], events: [] };
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
      // Gone entirely: the lifecycle closes the task (exit + delete) before the container.
      if (live && t.state !== 'exited') plan.events.push({ ...base, kind: 'task-exit', execId: c.id, pid: t.pid, exitStatus: 255, exitedAt: at });
      plan.events.push({ ...base, kind: 'container-delete' });
      continue;
    }
    if (live && !api) {
      if (t.state !== 'exited') plan.events.push({ ...base, kind: 'task-exit', execId: c.id, pid: t.pid, exitStatus: 255, exitedAt: at });
      plan.events.push({ ...base, kind: 'task-delete', pid: t.pid, exitStatus: t.exitStatus ?? 255 });
      continue;
    }
    if (!api) continue;
    if (!live) {
      plan.adoptTasks.push({ track: c, task: api });
      continue;
    }
    const now = taskStateOf(api.status);
    if (t.state === 'created' && (now === 'running' || now === 'paused' || now === 'exited')) plan.events.push({ ...base, kind: 'task-start', pid: api.pid });
    if ((t.state === 'created' || t.state === 'running' || t.state === 'paused') && now === 'exited') {
      plan.events.push({ ...base, kind: 'task-exit', execId: c.id, pid: api.pid || t.pid, exitStatus: api.exitStatus, exitedAt: api.exitedAt ?? at });
    }
  }
  for (const [k, c] of containers) {
    if (!followed.has(k)) plan.adopt.push({ container: c, task: tasks.get(k) });
  }
  return plan;
}
