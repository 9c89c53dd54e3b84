// containerd's event envelopes, decoded into the few shapes the watcher reasons about. Topics and payloads as
// containerd 1.6 publishes them (checked on the real daemon in test/integration/containerd-watch.test.ts):
//   /containers/create  ContainerCreate{id, image, runtime{name}}      /containers/delete  ContainerDelete{id}
//   /tasks/create       TaskCreate{container_id, bundle, pid}          /tasks/start        TaskStart{container_id, pid}
//   /tasks/exec-added   TaskExecAdded{container_id, exec_id}           /tasks/exec-started TaskExecStarted{…, pid}
//   /tasks/oom          TaskOOM{container_id}                          /tasks/exit         TaskExit{container_id, id, pid, exit_status, exited_at}
//   /tasks/delete       TaskDelete{container_id, pid, exit_status, exited_at, id}
// TaskExit's `id` is the exec id, equal to the container id for the init process. When a shim dies, containerd
// itself publishes TaskExit (137) and TaskDelete (id "") from its dead-shim cleanup. Decoded from the wire by
// envelope.ts.

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
