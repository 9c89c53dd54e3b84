// The doctor's vocabulary: every finding code, what it means and how bad it is. Codes are stable (scripts, alerts
// and the tests compare them), messages are for people and may change. docs/doctor.md renders this table.

export type Severity = 'critical' | 'warning' | 'info';

export const FINDING_CODES = {
  'containerd-unreachable': { severity: 'critical', meaning: 'containerd does not answer on its gRPC socket; tasks and containers could not be judged' },
  'stale-socket': { severity: 'warning', meaning: "a shim socket file of this containerd with nothing listening on it (a shim died without cleaning up)" },
  'foreign-listener': { severity: 'critical', meaning: "something other than this container's shim listens on its shim socket path: the next task create fails" },
  'orphaned-shim': { severity: 'critical', meaning: 'a shim process of this containerd whose task or container is gone (or whose containerd is gone)' },
  'leaked-bundle': { severity: 'critical', meaning: 'a task bundle directory with no task: the next start fails with "mkdir …: file exists"' },
  'leftover-rootfs-mount': { severity: 'warning', meaning: "a container rootfs still mounted in a bundle that has no task" },
  'task-shim-dead': { severity: 'critical', meaning: 'containerd lists a task whose shim process is gone' },
  'task-unknown': { severity: 'critical', meaning: 'containerd lists the task as UNKNOWN: its shim did not answer (hung shim)' },
  'task-stuck-created': { severity: 'warning', meaning: 'a task has been CREATED (never started) for longer than the threshold' },
  'container-no-task': { severity: 'info', meaning: 'a container has had no task for longer than the threshold (stuck in Created, or simply exited)' },
  'leftover-runc-state': { severity: 'critical', meaning: 'runc state of a container with no task and a dead init: the next create fails with "container with given ID already exists"' },
  'leftover-cgroup': { severity: 'info', meaning: 'a cgroup named after a container of this namespace that has no task, with no processes' },
  'stray-container-processes': { severity: 'warning', meaning: "processes still run in the cgroup of a container that has no task" },
  'instance-collision': { severity: 'info', meaning: 'another containerd instance on this host runs a container with the same namespace and id: runc state and cgroups keyed by (namespace, id) are shared, so neither instance can manage that id safely' },
  'suspicious-state-entry': { severity: 'warning', meaning: 'an entry in the task state dir that containerd would not write (symlink, file, garbage), left alone' },
} as const satisfies Record<string, { severity: Severity; meaning: string }>;

export type FindingCode = keyof typeof FINDING_CODES;

export type EvidenceValue = string | number | boolean | null | string[] | number[];

export interface Finding {
  code: FindingCode;
  severity: Severity;
  namespace?: string | undefined;
  containerId?: string | undefined;
  /** One line a person reads first. */
  summary: string;
  /** The facts the finding rests on, each one something a person can check. */
  evidence: Record<string, EvidenceValue>;
  /** Commands that show the same thing by hand. */
  see: string[];
  /** The repair action --fix would plan for it, if any (`manual` when only a person should act). */
  fix: string;
}

export const SEVERITY_ORDER: Record<Severity, number> = { critical: 0, warning: 1, info: 2 };

/** Info findings are reported but do not make the node unhealthy (exit code 0). */
export function countsAsUnhealthy(f: Finding): boolean {
  return f.severity !== 'info';
}
