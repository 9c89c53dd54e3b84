// `transship watch` as a library: containerd's event stream → bounded queue → one processor that owns all lifecycle
// state (so no locks: reconcile, periodic checks and events are applied by the same loop, in order) → spans,
// metrics, findings. The gRPC stream only decodes and enqueues; everything that reads the host or the API happens
// in the processor, off the stream's data path.
//
//   intake ──► BoundedQueue ──► processor ──► Lifecycles (spans, phase metrics)
//     │ (drops counted,             │  ├──► LeakChecker (post-delete checks, findings)
//     │  → reconcile)               │  ├──► checkTracks (stuck in Created, dead shims, missing exits)
//     └ subscription (one retry)    │  └──► planReconcile (after (re)subscribe, periodically, after drops)
//                                   └ waits while the span exporter's backlog is above its high-water mark
import { trace, type Tracer } from '@opentelemetry/api';
import { ContainerdClient, socketPathOf, timestampToDate } from '../client.js';
import type { GatherOptions } from '../gather.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorSummary, throwIfAborted } from '@transship/core/errors';
import { log } from '@transship/core/log';
import {
  containerdWatchEventsDroppedTotal,
  containerdWatchEventsTotal,
  containerdWatchExitEventsMissingTotal,
  containerdWatchLastEventTimestampSeconds,
  containerdWatchLeakChecksTotal,
  containerdWatchLeaksTotal,
  containerdWatchQueueDepth,
  containerdWatchReconcilesTotal,
  containerdWatchResubscriptionsTotal,
  containerdWatchSubscriptionUp,
  containerdWatchTasksStuckCreated,
  containerdWatchUnexpectedShimExitsTotal,
} from '../metrics.js';
import type { WatchEvent } from './events.js';
import { LinuxHost, type HostProbe, type TaskHostInfo } from './host.js';
import { DEFAULT_LEAK_CHECK, LeakChecker, type LeakCheckOptions, type LeakCheckResult } from './leak-check.js';
import { Lifecycles, OOM_WAIT_MS, trackKey, type ContainerTrack, type TaskTrack } from './lifecycle.js';
import { BoundedQueue } from './queue.js';
import { planReconcile, taskStateOf, toApiTask, type ApiView } from './reconcile.js';
import type { SpanBacklog } from './span-export.js';
import { DEFAULT_STUCK, checkTracks, severityOf, type StuckOptions, type WatchFinding } from './stuck.js';
import { runSubscription } from './subscription.js';

/** Where containerd and its leftovers live: the doctor's options (GatherOptions) say it the same way. */
export interface WatchOptions extends Pick<GatherOptions, 'address' | 'stateDir' | 'namespaces' | 'socketDir' | 'procRoot' | 'cgroupRoot' | 'runcRoot' | 'timeoutMs'> {
  queueCapacity?: number | undefined;
  /** Read coalescing window of the event stream (event-stream.ts; default 500 ms, 0 = read every event at once). */
  coalesceMs?: number | undefined;
  reconcileIntervalMs?: number | undefined;
  checkIntervalMs?: number | undefined;
  stuck?: Partial<StuckOptions> | undefined;
  leakCheck?: Partial<LeakCheckOptions> | undefined;
  /** Where lifecycle spans go (default: the global tracer, a no-op unless OTLP is configured). */
  tracer?: Tracer | undefined;
  /** The span pipeline behind `tracer`, when it is ours: its backlog pushes back on the event processor. */
  spans?: SpanBacklog | undefined;
  retry?: { baseDelayMs?: number; maxDelayMs?: number; maxElapsedMs?: number; random?: () => number } | undefined;
  /** Recent findings kept for /findings and --json (oldest dropped first). */
  maxFindings?: number | undefined;
  onFinding?: ((f: WatchFinding) => void) | undefined;
  client?: ContainerdClient | undefined;
  host?: HostProbe | undefined;
}

/** An event as queued: with what the host showed when it arrived (read then, not when a lagging processor gets to it). */
type Queued = WatchEvent & { shimGoneAtExit?: boolean; info?: TaskHostInfo | undefined };

export interface WatchStatus {
  subscribed: boolean;
  subscribedSince: string | null;
  resubscriptions: number;
  eventsReceived: number;
  eventsDropped: number;
  queueDepth: number;
  queueHighWater: number;
  queueCapacity: number;
  containersTracked: number;
  pendingLeakChecks: number;
  reconciles: number;
  lastReconcileAt: string | null;
  findings: number;
  spansBacklog: number | null;
  spansDropped: number | null;
}

export class Watcher {
  readonly queue: BoundedQueue<Queued>;
  readonly lifecycles: Lifecycles;
  readonly findings: WatchFinding[] = [];
  private readonly client: ContainerdClient;
  private readonly ownsClient: boolean;
  private readonly host: HostProbe;
  private readonly leaks: LeakChecker;
  private readonly stuckOpts: StuckOptions;
  private readonly namespaces: Set<string> | undefined;
  /** Host facts of every live task (shim, socket, group), for the intake's "was the shim still alive at exit?" check. */
  private readonly hostInfo = new Map<string, TaskHostInfo>();
  private subscribed = false;
  private subscribedSince: number | undefined;
  private resubscriptions = 0;
  private eventsReceived = 0;
  private reconcileWanted: 'initial' | 'resumed' | 'periodic' | 'drops' | undefined;
  private initialDone = false;
  private checkDue = false;
  private reconciles = 0;
  private lastReconcileAt: number | undefined;
  private dropsSinceReconcile = 0;
  /** Differences the last periodic reconcile saw, acted on if the next one sees them again. */
  private suspects = new Set<string>();
  private findingCount = 0;
  /** Per-topic children of the events counter: label lookup once per topic, not per event. */
  private readonly topicCounters = new Map<string, { inc(): void }>();

  constructor(private readonly opts: WatchOptions) {
    this.queue = new BoundedQueue<Queued>(opts.queueCapacity ?? 10_000, () => {
      containerdWatchEventsDroppedTotal.inc({ reason: 'queue_full' });
      this.dropsSinceReconcile++;
    });
    this.client = opts.client ?? new ContainerdClient({ address: opts.address, timeoutMs: opts.timeoutMs, maxAttempts: 1 });
    this.ownsClient = !opts.client;
    this.host = opts.host ?? new LinuxHost(opts);
    this.stuckOpts = { ...DEFAULT_STUCK, ...definedOnly(opts.stuck ?? {}) };
    this.namespaces = opts.namespaces && opts.namespaces.length > 0 ? new Set(opts.namespaces) : undefined;
    // Due leak checks run when the processor is awake for events anyway; a timer that waits one coalescing window
    // longer rarely has to wake the watcher just for them.
    const leakBatchMs = Math.max(DEFAULT_LEAK_CHECK.batchMs ?? 0, opts.coalesceMs ?? DEFAULT_COALESCE_MS);
    this.leaks = new LeakChecker(this.host, { ...DEFAULT_LEAK_CHECK, batchMs: leakBatchMs, ...definedOnly(opts.leakCheck ?? {}) }, (r) => this.onLeakChecked(r));
    this.lifecycles = new Lifecycles(opts.tracer ?? trace.getTracer('transship-watch'), {
      taskCreated: (c, t) => {
        if (t.host) this.hostInfo.set(trackKey(c.namespace, c.id), t.host);
      },
      taskDeleted: (c, t, at) => this.scheduleLeakCheck(c, t, at),
      ended: (c) => {
        this.hostInfo.delete(trackKey(c.namespace, c.id));
      },
      // The processor writes the waiting exit when it next wakes (flushExits below); make sure it does.
      exitDeferred: () => setTimeout(() => this.queue.wake(), OOM_WAIT_MS + 50).unref(),
    });
  }

  status(): WatchStatus {
    return {
      subscribed: this.subscribed,
      subscribedSince: this.subscribedSince ? new Date(this.subscribedSince).toISOString() : null,
      resubscriptions: this.resubscriptions,
      eventsReceived: this.eventsReceived,
      eventsDropped: this.queue.dropped,
      queueDepth: this.queue.size,
      queueHighWater: this.queue.highWater,
      queueCapacity: this.queue.capacity,
      containersTracked: this.lifecycles.size,
      pendingLeakChecks: this.leaks.size,
      reconciles: this.reconciles,
      lastReconcileAt: this.lastReconcileAt ? new Date(this.lastReconcileAt).toISOString() : null,
      findings: this.findingCount,
      spansBacklog: this.opts.spans?.backlog ?? null,
      spansDropped: this.opts.spans?.dropped ?? null,
    };
  }

  /** Resolves once subscribed and the first reconcile is done. */
  async ready(signal: AbortSignal): Promise<void> {
    while (!(this.subscribed && this.initialDone)) {
      throwIfAborted(signal);
      await sleep(25, undefined, { signal }).catch(() => undefined);
    }
  }

  /** Asks the processor for a reconcile + checks now (used by --once and tests). */
  requestCheck(): void {
    this.reconcileWanted ??= 'periodic';
    this.checkDue = true;
    this.queue.wake();
  }

  /** Runs until the signal fires (resolves) or containerd refuses the watcher for good (rejects). */
  async run(signal: AbortSignal): Promise<void> {
    const stop = new AbortController();
    const onAbort = (): void => stop.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) stop.abort(signal.reason);
    const reconcileEvery = setInterval(() => {
      this.reconcileWanted ??= 'periodic';
      this.queue.wake();
    }, this.opts.reconcileIntervalMs ?? 30_000);
    const checkEvery = setInterval(() => {
      this.checkDue = true;
      this.queue.wake();
    }, this.opts.checkIntervalMs ?? 5_000);
    containerdWatchSubscriptionUp.set(0);
    const processor = this.process(stop.signal);
    try {
      await runSubscription({
        address: socketPathOf(this.opts.address),
        filters: eventFilters(this.namespaces),
        signal: stop.signal,
        timeoutMs: this.opts.timeoutMs ?? 5000,
        coalesceMs: this.opts.coalesceMs ?? DEFAULT_COALESCE_MS,
        baseDelayMs: this.opts.retry?.baseDelayMs,
        maxDelayMs: this.opts.retry?.maxDelayMs,
        maxElapsedMs: this.opts.retry?.maxElapsedMs,
        random: this.opts.retry?.random,
        onEvent: (ev) => this.intake(ev),
        onBatch: () => {
          containerdWatchLastEventTimestampSeconds.set(Date.now() / 1000);
          containerdWatchQueueDepth.set(this.queue.size);
        },
        // While the stream is polled, the processor runs after every poll (with or without events) and does the due
        // post-delete checks then: the leak checker needs no timer of its own (each timer is a wakeup).
        onPacing: (paced) => this.leaks.setPaced(paced),
        onPoll: () => this.queue.wake(),
        onSubscribed: ({ resumed }) => {
          this.subscribed = true;
          this.subscribedSince = Date.now();
          containerdWatchSubscriptionUp.set(1);
          if (resumed) {
            this.resubscriptions++;
            containerdWatchResubscriptionsTotal.inc();
          }
          log.info({ address: this.opts.address, resumed }, 'subscribed to containerd events');
          this.reconcileWanted = this.initialDone ? 'resumed' : 'initial';
          this.queue.wake();
        },
        onLost: () => {
          this.subscribed = false;
          containerdWatchSubscriptionUp.set(0);
        },
      });
    } finally {
      stop.abort(signal.reason);
      signal.removeEventListener('abort', onAbort);
      clearInterval(reconcileEvery);
      clearInterval(checkEvery);
      await processor.catch((err: unknown) => log.error({ error: errorSummary(err) }, 'watch processor failed'));
      this.subscribed = false;
      containerdWatchSubscriptionUp.set(0);
      this.leaks.close();
      this.lifecycles.closeAll();
      if (this.ownsClient) this.client.close();
    }
  }

  /**
   * On the stream's data path: count, enqueue. The only host read is one /proc stat for init exits. The gauges of the
   * data path (last event time, queue depth) are set once per socket read, in onBatch.
   */
  private intake(ev: WatchEvent): void {
    this.eventsReceived++;
    const topic = ev.kind === 'other' ? ev.topic : ev.kind;
    let counter = this.topicCounters.get(topic);
    if (!counter) {
      counter = containerdWatchEventsTotal.labels({ topic });
      // Topics come from containerd; an unbounded set would be a cardinality problem in the metric itself anyway.
      if (this.topicCounters.size < 64) this.topicCounters.set(topic, counter);
    }
    counter.inc();
    if (this.namespaces && !this.namespaces.has(ev.namespace)) return;
    const q: Queued = ev;
    if (ev.kind === 'task-create') {
      // Which shim serves the task is read now, ≤ one coalescing window after containerd published the create: the
      // processor may get to the event after a short-lived task (and its shim) is gone (issue 20 item 17).
      q.info = this.inspect(ev.namespace, ev.id, ev.pid, ev.bundle, ev.at);
      if (q.info) this.hostInfo.set(trackKey(ev.namespace, ev.id), q.info);
    }
    // A shim lives on after its task's exit until the task is deleted, and then unlinks its socket and exits. One
    // already gone when containerd reports the exit, with its socket left behind, was killed (containerd's dead-shim
    // cleanup publishes that exit). Checked here, not in the processor, so a lagging processor cannot mistake a shim
    // that exited normally after the delete for a dead one; the socket tells the two apart when delivery itself lags.
    if (ev.kind === 'task-exit' && ev.execId === ev.id) q.shimGoneAtExit = this.shimGone(ev.namespace, ev.id);
    this.queue.push(q);
  }

  private async process(signal: AbortSignal): Promise<void> {
    const spans = this.opts.spans;
    const highWater = spans ? Math.floor(spans.capacity * 0.75) : 0;
    const lowWater = spans ? Math.floor(spans.capacity * 0.5) : 0;
    for (;;) {
      try {
        await this.queue.wait(signal);
      } catch {
        return; // cancelled
      }
      if (this.dropsSinceReconcile > 0 && Date.now() - (this.lastReconcileAt ?? 0) > 2000) this.reconcileWanted ??= 'drops';
      if (this.reconcileWanted && this.subscribed) {
        const why = this.reconcileWanted;
        this.reconcileWanted = undefined;
        await this.reconcile(why, signal);
      }
      if (this.checkDue) {
        this.checkDue = false;
        this.runChecks();
      }
      // A bounded batch per turn, so reconciles and checks are not starved by a flood.
      for (let n = 0; n < 256; n++) {
        const ev = this.queue.shift();
        if (ev === undefined) break;
        await this.apply(ev);
        if (spans && spans.backlog > highWater) {
          try {
            await spans.waitBelow(lowWater, signal);
          } catch {
            return;
          }
        }
      }
      // Awake anyway: run the post-delete checks that are due, so their timer rarely needs its own wakeup, and
      // write SIGKILL exits whose OOM event did not come (lifecycle.ts, OOM_WAIT_MS).
      this.leaks.tick();
      this.lifecycles.flushExits();
      containerdWatchQueueDepth.set(this.queue.size);
      if (this.queue.size > 0) this.queue.wake();
    }
  }

  /**
   * Whether the shim of (ns, id) died rather than exited: a clean shim unlinks its socket before it exits, a killed one
   * cannot. Known shim: gone (pid + start time) with its socket file still there. Unknown shim (it died before anyone
   * could see it, e.g. killed right after the start): a socket file that nothing listens on and no serving shim of
   * the group alive — a shim in its clean shutdown between closing the listener and unlinking the file still runs.
   * Classifying by what the host shows, not by how long the shim lived, is issue 16 defect 3.
   */
  private shimGone(namespace: string, id: string): boolean {
    const info = this.hostInfo.get(trackKey(namespace, id)) ?? this.host.fallbackInfo(namespace, id);
    if (!this.host.exists(info.socket)) return false;
    if (info.shim) return this.host.liveness(info.shim.pid, info.shim.startTime) !== 'alive';
    return !this.host.listening(info.socket) && this.host.findShim(namespace, info.groupId, 0) === undefined;
  }

  private inspect(namespace: string, id: string, pid: number, bundle: string, publishedAt?: number): TaskHostInfo | undefined {
    try {
      return this.host.taskCreated(namespace, id, pid, bundle, publishedAt);
    } catch (err) {
      log.debug({ namespace, containerId: id, error: errorSummary(err) }, 'could not inspect task on the host');
      return undefined;
    }
  }

  private async apply(ev: Queued): Promise<void> {
    let info: TaskHostInfo | undefined;
    if (ev.kind === 'task-create') info = ev.info ?? this.inspect(ev.namespace, ev.id, ev.pid, ev.bundle, ev.reconciled ? undefined : ev.at);
    if (ev.kind === 'task-start') this.resolveShim(ev.namespace, ev.id);
    if (ev.kind === 'task-exit' && ev.shimGoneAtExit) {
      const c = this.lifecycles.get(ev.namespace, ev.id);
      if (c?.task && !c.task.shimDied) this.shimDied(c, c.task, 'the shim was already gone when containerd reported the exit');
    }
    const c = this.lifecycles.apply(ev, info);
    if (ev.kind === 'task-create' && !c) this.hostInfo.delete(trackKey(ev.namespace, ev.id)); // a late event, ignored
    // Level checks first: building the fields object for every event costs more than the rest of the intake.
    if (c && ev.kind !== 'other' && log.isLevelEnabled('debug')) {
      const t = c.task;
      log.debug({ containerId: c.id, namespace: c.namespace, event: ev.kind, shimPid: t?.host?.shim?.pid, socket: t?.host?.socket, reconciled: ev.reconciled === true }, `containerd ${ev.kind}`);
    }
    if (c && ev.kind === 'task-oom') {
      const t = c.task;
      log.warn({ containerId: c.id, namespace: c.namespace, shimPid: t?.host?.shim?.pid, socket: t?.host?.socket, pid: t?.pid }, 'container OOM kill');
    }
  }

  /**
   * A task whose create showed its socket but not its shim (read in the instant between the shim's listen and its
   * fork of runc, or under a pid race): looked for again at its start and at the periodic checks, for
   * SHIM_RESOLVE_MS, never trusting one look. The shim is what the dead-shim detection watches.
   */
  private resolveShim(namespace: string, id: string): void {
    const c = this.lifecycles.get(namespace, id);
    const t = c?.task;
    if (!c || !t?.host || t.host.shim || (t.state !== 'created' && t.state !== 'running' && t.state !== 'paused')) return;
    const shim = this.host.findShim(namespace, t.host.groupId, t.pid);
    if (shim) this.lifecycles.shimFound(c, t, shim);
  }

  private shimDied(c: ContainerTrack, t: TaskTrack, why: string): void {
    t.shimDied = true;
    t.reported.add('task-shim-dead');
    containerdWatchUnexpectedShimExitsTotal.inc({ namespace: c.namespace });
    const shim = t.host?.shim;
    this.record({
      code: 'task-shim-dead',
      severity: severityOf('task-shim-dead'),
      namespace: c.namespace,
      containerId: c.id,
      summary: `shim pid ${shim?.pid ?? '?'} of ${c.namespace}/${c.id} died while its task was ${t.state.toUpperCase()}: ${why}`,
      evidence: { status: t.state.toUpperCase(), pid: t.pid, shimPid: shim?.pid ?? null, socket: t.host?.socket ?? null },
      see: [`ctr -n ${c.namespace} task ls`, `journalctl -u containerd | grep ${c.id}`],
      fix: 'manual: find out what killed the shim (dmesg for the OOM killer); the doctor cleans what it left',
      at: Date.now(),
    });
  }

  private scheduleLeakCheck(c: ContainerTrack, t: TaskTrack, at: number): void {
    const info = t.host ?? this.host.fallbackInfo(c.namespace, c.id);
    let groupStillServing = false;
    for (const other of this.lifecycles.all()) {
      if (other !== c && other.namespace === c.namespace && other.task?.host?.groupId === info.groupId && other.task.state !== 'deleted') groupStillServing = true;
    }
    this.leaks.schedule({ namespace: c.namespace, id: c.id, info, groupStillServing }, at);
  }

  private onLeakChecked(r: LeakCheckResult): void {
    containerdWatchLeakChecksTotal.inc({ result: r.findings.length > 0 ? 'leaked' : 'clean' });
    for (const f of r.findings) {
      containerdWatchLeaksTotal.inc({ kind: f.code });
      this.record({ ...f, at: Date.now() });
    }
    this.lifecycles.leakChecked(r);
  }

  private runChecks(): void {
    const now = Date.now();
    for (const c of this.lifecycles.all()) if (c.task?.host && !c.task.host.shim && now - c.task.createdAt < SHIM_RESOLVE_MS) this.resolveShim(c.namespace, c.id);
    const res = checkTracks(this.lifecycles.all(), this.host, Date.now(), this.stuckOpts);
    containerdWatchTasksStuckCreated.reset();
    for (const [ns, n] of res.stuckByNamespace) containerdWatchTasksStuckCreated.set({ namespace: ns }, n);
    for (const d of res.shimDeaths) containerdWatchUnexpectedShimExitsTotal.inc({ namespace: d.track.namespace });
    for (const d of res.detections) {
      if (d.finding.code === 'exit-missing') containerdWatchExitEventsMissingTotal.inc({ namespace: d.track.namespace });
      this.record(d.finding);
    }
  }

  private record(f: WatchFinding): void {
    this.findingCount++;
    this.findings.push(f);
    const max = this.opts.maxFindings ?? 1000;
    if (this.findings.length > max) this.findings.splice(0, this.findings.length - max);
    const t = this.lifecycles.get(f.namespace ?? '', f.containerId ?? '')?.task;
    log.warn({ code: f.code, severity: f.severity, containerId: f.containerId, namespace: f.namespace, shimPid: t?.host?.shim?.pid ?? f.evidence.shimPid ?? f.evidence.pid, socket: t?.host?.socket ?? f.evidence.socket ?? f.evidence.path, evidence: f.evidence }, f.summary);
    this.opts.onFinding?.(f);
  }

  private async fetchView(signal: AbortSignal): Promise<ApiView> {
    const takenAt = Date.now();
    const all = await this.client.listNamespaces({ signal });
    const namespaces = this.namespaces ? all.filter((n) => this.namespaces?.has(n)) : all;
    const per = await Promise.all(
      namespaces.map(async (ns) => {
        const [cs, ts] = await Promise.all([this.client.listContainers(ns, { signal }), this.client.listTasks(ns, { signal })]);
        return {
          containers: cs.map((c) => ({ namespace: ns, id: c.id, image: c.image, runtime: c.runtime?.name ?? '', createdAt: timestampToDate(c.created_at)?.getTime() })),
          tasks: ts.map((t) => toApiTask(ns, t, timestampToDate(t.exited_at)?.getTime())),
        };
      }),
    );
    return { takenAt, namespaces, containers: per.flatMap((p) => p.containers), tasks: per.flatMap((p) => p.tasks) };
  }

  private async reconcile(why: 'initial' | 'resumed' | 'periodic' | 'drops', signal: AbortSignal): Promise<void> {
    let view: ApiView;
    try {
      view = await this.fetchView(signal);
    } catch (err) {
      if (signal.aborted) return;
      containerdWatchReconcilesTotal.inc({ outcome: 'failed' });
      log.warn({ why, error: errorSummary(err) }, 'reconcile with containerd failed; retried at the next occasion');
      this.reconcileWanted ??= why === 'initial' ? 'initial' : 'periodic';
      return;
    }
    // Events queued before the API answered describe the past of this view: apply them first.
    for (let n = this.queue.size; n > 0; n--) {
      const ev = this.queue.shift();
      if (ev !== undefined) await this.apply(ev);
    }
    const reconciled = why !== 'initial';
    const plan = planReconcile(view, this.lifecycles.all(), { confirmed: why === 'periodic' ? this.suspects : undefined });
    this.suspects = plan.suspects;
    for (const a of plan.adopt) {
      const c = this.lifecycles.adopt(a.container.namespace, a.container.id, a.container.createdAt ?? view.takenAt, { image: a.container.image, runtime: a.container.runtime, reconciled });
      if (a.task) await this.adoptTask(c, a.task, view.takenAt);
    }
    for (const x of plan.adoptTasks) await this.adoptTask(x.track, x.task, view.takenAt);
    for (const ev of plan.events) await this.apply(ev);
    this.reconciles++;
    this.lastReconcileAt = Date.now();
    this.dropsSinceReconcile = 0;
    containerdWatchReconcilesTotal.inc({ outcome: why });
    if (why === 'initial') {
      this.initialDone = true;
    }
    if (plan.events.length > 0 || (reconciled && plan.adopt.length > 0)) log.info({ why, transitions: plan.events.length, adopted: plan.adopt.length }, 'reconciled missed lifecycle transitions');
  }

  private async adoptTask(c: ContainerTrack, task: { namespace: string; id: string; pid: number; status: Parameters<typeof taskStateOf>[0]; exitStatus: number; exitedAt: number | undefined }, at: number): Promise<void> {
    const bundle = this.host.fallbackInfo(task.namespace, task.id).bundle;
    const info = this.inspect(task.namespace, task.id, task.pid, bundle);
    const state = taskStateOf(task.status);
    // The bundle's config.json dates the create, so a task adopted while stuck in CREATED is judged by its real age.
    this.lifecycles.adoptTask(c, { pid: task.pid, status: state, at: info?.bundleWrittenAt ?? at, ...(state === 'exited' ? { exitStatus: task.exitStatus, exitedAt: task.exitedAt } : {}) }, info);
  }
}

/**
 * containerd-side filters: only the task and container topics (snapshot, image, content and namespace events are a
 * quarter of a lifecycle's events and every event costs the watcher a wakeup), and only the followed namespaces.
 * containerd ORs the list and ANDs the comma-separated parts of one filter.
 */
export function eventFilters(namespaces: Set<string> | undefined): string[] {
  const topics = ['topic~="^/tasks/"', 'topic~="^/containers/"'];
  if (!namespaces) return topics;
  return [...namespaces].flatMap((ns) => topics.map((t) => `namespace==${JSON.stringify(ns)},${t}`));
}

/** How long after its create a task's unknown shim is looked for again. */
const SHIM_RESOLVE_MS = 30_000;

/** Read coalescing of the event stream: delivery up to this much later, in exchange for one wakeup per burst. */
export const DEFAULT_COALESCE_MS = 500;

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
