// Post-delete leak check: shortly after containerd reports a task deleted, verify that what the task held is really
// gone — shim process, shim socket, bundle directory, rootfs mount, cgroup, runc state — and record one finding per
// resource that is not, with the doctor's finding codes (so alerts, dashboards and `transship doctor --fix` speak
// the same language). This is the "released resources list" for every container, not only when someone debugs.
//
// Why a delay and re-checks: after TaskDelete the shim still has to exit and unlink its socket, which takes a few
// milliseconds to a second. The check runs at `delayMs`, and whatever is not released yet is re-checked with
// doubling intervals until `timeoutMs`; only what is still there then is a leak. Checks are batched: a due check may
// wait up to `batchMs`, so the checks of deletes close together run in one pass, and the watcher also runs due checks
// whenever it is awake anyway (tick() after each batch of events) — on a node with steady churn the timer, armed at
// the earliest due check + `batchMs`, rarely fires at all (each wakeup costs CPU; a late check costs nothing).
import type { Finding, FindingCode } from '../findings.js';
import { FINDING_CODES } from '../findings.js';
import type { HostProbe, ReleaseReport, ReleaseTarget } from './host.js';

export interface LeakCheckOptions {
  delayMs: number;
  timeoutMs: number;
  /** How late a due check may run so that it shares a pass (default 250 ms). */
  batchMs?: number;
}

export const DEFAULT_LEAK_CHECK: LeakCheckOptions = { delayMs: 500, timeoutMs: 10_000, batchMs: 250 };

export interface LeakCheckResult {
  target: ReleaseTarget;
  report: ReleaseReport;
  findings: Finding[];
  /** How long after the delete the shim was seen gone (undefined when it was not checked or never went). */
  shimGoneAfterMs: number | undefined;
  checkedAfterMs: number;
}

function finding(code: FindingCode, t: ReleaseTarget, summary: string, evidence: Finding['evidence'], see: string[], fix: string): Finding {
  return { code, severity: FINDING_CODES[code].severity, namespace: t.namespace, containerId: t.id, summary, evidence, see, fix };
}

/** True when nothing is left: the check can stop early. */
export function allReleased(r: ReleaseReport): boolean {
  return r.shimExited !== false && r.socketRemoved !== false && r.bundleRemoved && r.rootfsMounts.length === 0 && r.cgroupsRemoved && r.runcStateRemoved;
}

/** The doctor's findings for what a deleted task left behind (pure: unit-tested on reports). */
export function leakFindings(t: ReleaseTarget, r: ReleaseReport): Finding[] {
  const out: Finding[] = [];
  const { info } = t;
  const who = `${t.namespace}/${t.id}`;
  if (r.shimExited === false && info.shim) {
    out.push(
      finding('orphaned-shim', t, `shim pid ${info.shim.pid} of ${who} still runs after its task was deleted`, { pid: info.shim.pid, startTime: info.shim.startTime, reason: 'task-gone', socket: info.socket, socketListening: r.socketListening }, [`ps -o pid,ppid,lstart,args -p ${info.shim.pid}`], 'stop-shim'),
    );
  }
  if (r.socketRemoved === false && !r.socketListening) {
    out.push(finding('stale-socket', t, `shim socket of ${who} was left behind with nothing listening`, { path: info.socket, listening: false, shimPid: info.shim?.pid ?? null }, [`ls -l ${info.socket}`, `ss -xlp | grep ${info.socket}`], 'remove-socket'));
  }
  if (!r.bundleRemoved) {
    out.push(finding('leaked-bundle', t, `bundle of ${who} is still there after its task was deleted`, { dir: info.bundle, mounted: r.rootfsMounts }, [`ls -la ${info.bundle}`], 'remove-bundle'));
  }
  for (const m of r.rootfsMounts) {
    out.push(finding('leftover-rootfs-mount', t, `mount at ${m} outlived the task of ${who}`, { mountPoint: m }, [`findmnt ${m}`], 'unmount'));
  }
  if (!r.cgroupsRemoved) {
    if (r.cgroupPids.length > 0) {
      out.push(finding('stray-container-processes', t, `${r.cgroupPids.length} process(es) still run in the cgroup of ${who} after its task was deleted`, { cgroups: r.cgroupLeft, pids: r.cgroupPids }, r.cgroupLeft.slice(0, 1).map((p) => `cat ${p}/cgroup.procs`), 'manual: these processes escaped their shim'));
    } else {
      out.push(finding('leftover-cgroup', t, `empty cgroup of ${who} left after its task was deleted`, { cgroups: r.cgroupLeft }, r.cgroupLeft.slice(0, 1).map((p) => `ls ${p}`), 'remove-cgroup'));
    }
  }
  if (!r.runcStateRemoved) {
    out.push(finding('leftover-runc-state', t, `runc state of ${who} outlived its task`, { dir: info.runcStateDir }, [`ls ${info.runcStateDir}`], 'runc-delete'));
  }
  return out;
}

interface Pending {
  target: ReleaseTarget;
  deletedAt: number;
  nextAt: number;
  intervalMs: number;
  shimGoneAfterMs: number | undefined;
}

export class LeakChecker {
  private readonly pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private paced = false;

  constructor(
    private readonly host: HostProbe,
    private readonly opts: LeakCheckOptions,
    private readonly onResult: (r: LeakCheckResult) => void,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  /** Schedules the check of a task deleted at `deletedAt` (a second delete of the same task replaces the first). */
  schedule(target: ReleaseTarget, deletedAt = this.now()): void {
    const first = Math.min(this.opts.delayMs, this.opts.timeoutMs);
    this.pending.set(`${target.namespace}\u0000${target.id}`, { target, deletedAt, nextAt: deletedAt + first, intervalMs: Math.max(50, first), shimGoneAfterMs: undefined });
    this.arm();
  }

  /**
   * Paced: someone calls tick() at least every `batchMs` anyway (the event stream's polling timer, while events keep
   * coming), so no timer of our own. Why it matters: Node cannot move a timer later without a wakeup at its old
   * deadline (clearTimeout leaves libuv's timer armed; the loop wakes, finds nothing due and re-arms), and a timer
   * re-armed after every pass cost one empty wakeup per pass — half of the watcher's wakeups on a busy node.
   */
  setPaced(paced: boolean): void {
    if (this.paced === paced) return;
    this.paced = paced;
    if (paced) this.stopTimer();
    else this.arm();
  }

  /**
   * Arms the one timer for the earliest due check + the batching slack. Only ever earlier: a timer that would be
   * moved later is left to fire (moving it later costs the same wakeup, see setPaced) and re-arms from there.
   */
  private arm(): void {
    if (this.paced) return;
    let earliest = Number.POSITIVE_INFINITY;
    for (const p of this.pending.values()) earliest = Math.min(earliest, p.nextAt);
    if (earliest === Number.POSITIVE_INFINITY) return this.stopTimer();
    const at = Math.max(earliest + (this.opts.batchMs ?? 0), this.now() + 20);
    if (this.timer && this.timerAt <= at) return;
    this.stopTimer();
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.tick();
    }, at - this.now());
    this.timer.unref();
  }

  /** Runs every check that is due (the timer and the watcher's event batches call it; tests call it directly). */
  tick(): void {
    if (this.pending.size === 0) return;
    const now = this.now();
    for (const [key, p] of this.pending) {
      if (p.nextAt > now + 20) continue;
      const report = this.host.released(p.target);
      if (p.shimGoneAfterMs === undefined && report.shimExited === true) p.shimGoneAfterMs = now - p.deletedAt;
      const timedOut = now - p.deletedAt >= this.opts.timeoutMs;
      if (allReleased(report) || timedOut) {
        this.pending.delete(key);
        this.onResult({ target: p.target, report, findings: leakFindings(p.target, report), shimGoneAfterMs: p.shimGoneAfterMs, checkedAfterMs: now - p.deletedAt });
        continue;
      }
      p.intervalMs *= 2;
      p.nextAt = Math.min(now + p.intervalMs, p.deletedAt + this.opts.timeoutMs);
    }
    this.arm();
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
  }

  /** Drops pending checks and the timer (watcher shutdown). */
  close(): void {
    this.pending.clear();
    this.stopTimer();
  }
}
