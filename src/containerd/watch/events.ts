// containerd's event envelopes, decoded into the few shapes the watcher reasons about. Topics and payloads as
// containerd 1.6 publishes them (checked on the real daemon in test/integration/containerd-watch.test.ts):
//   /containers/create  ContainerCreate{id, image, runtime{name}}      /containers/delete  ContainerDelete{id}
//   /tasks/create       TaskCreate{container_id, bundle, pid}          /tasks/start        TaskStart{container_id, pid}
//   /tasks/exec-added   TaskExecAdded{container_id, exec_id}           /tasks/exec-started TaskExecStarted{…, pid}
//   /tasks/oom          TaskOOM{container_id}                          /tasks/exit         TaskExit{container_id, id, pid, exit_status, exited_at}
//   /tasks/delete       TaskDelete{container_id, pid, exit_status, exited_at, id}
// TaskExit's `id` is the exec id, equal to the container id for the init process. When a shim dies, containerd
// itself publishes TaskExit (137) and TaskDelete (id "") from its dead-shim cleanup.
import { decodeEvent, timestampToDate, type EnvelopeMessage, type Timestamp } from '../client.js';

interface Base {
  namespace: string;
  /** containerd's publish time (ms since the epoch); the receive time when containerd sent none. */
  at: number;
  /** True when a reconcile with the API produced this transition, not the event stream. */
  reconciled?: boolean;
}

export type WatchEvent =
  | (Base & { kind: 'container-create'; id: string; image: string; runtime: string })
  | (Base & { kind: 'container-delete'; id: string })
  | (Base & { kind: 'task-create'; id: string; pid: number; bundle: string })
  | (Base & { kind: 'task-start'; id: string; pid: number })
  | (Base & { kind: 'exec-added'; id: string; execId: string })
  | (Base & { kind: 'exec-started'; id: string; execId: string; pid: number })
  | (Base & { kind: 'task-oom'; id: string })
  | (Base & { kind: 'task-exit'; id: string; execId: string; pid: number; exitStatus: number; exitedAt: number })
  | (Base & { kind: 'task-delete'; id: string; pid: number; exitStatus: number })
  | (Base & { kind: 'task-paused' | 'task-resumed'; id: string })
  | (Base & { kind: 'other'; topic: string });

export type WatchEventKind = WatchEvent['kind'];

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}
function num(v: unknown): number {
  return typeof v === 'number' ? v : typeof v === 'string' && v !== '' ? Number(v) : 0;
}

export function toWatchEvent(env: EnvelopeMessage, receivedAt = Date.now()): WatchEvent {
  const base: Base = { namespace: env.namespace, at: timestampToDate(env.timestamp)?.getTime() ?? receivedAt };
  const p = env.event ? decodeEvent(env.event) : undefined;
  if (!p) return { ...base, kind: 'other', topic: env.topic };
  const cid = str(p.container_id);
  switch (env.topic) {
    case '/containers/create': {
      const rt = p.runtime as { name?: unknown } | null | undefined;
      return { ...base, kind: 'container-create', id: str(p.id), image: str(p.image), runtime: str(rt?.name) };
    }
    case '/containers/delete':
      return { ...base, kind: 'container-delete', id: str(p.id) };
    case '/tasks/create':
      return { ...base, kind: 'task-create', id: cid, pid: num(p.pid), bundle: str(p.bundle) };
    case '/tasks/start':
      return { ...base, kind: 'task-start', id: cid, pid: num(p.pid) };
    case '/tasks/exec-added':
      return { ...base, kind: 'exec-added', id: cid, execId: str(p.exec_id) };
    case '/tasks/exec-started':
      return { ...base, kind: 'exec-started', id: cid, execId: str(p.exec_id), pid: num(p.pid) };
    case '/tasks/oom':
      return { ...base, kind: 'task-oom', id: cid };
    case '/tasks/exit':
      return { ...base, kind: 'task-exit', id: cid, execId: str(p.id) || cid, pid: num(p.pid), exitStatus: num(p.exit_status), exitedAt: timestampToDate(p.exited_at as Timestamp | null)?.getTime() ?? base.at };
    case '/tasks/delete':
      return { ...base, kind: 'task-delete', id: cid, pid: num(p.pid), exitStatus: num(p.exit_status) };
    case '/tasks/paused':
      return { ...base, kind: 'task-paused', id: cid };
    case '/tasks/resumed':
      return { ...base, kind: 'task-resumed', id: cid };
    default:
      return { ...base, kind: 'other', topic: env.topic };
  }
}
