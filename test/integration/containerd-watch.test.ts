// `transship watch` against a real containerd 1.6 + runc (private instance, test/support/containerd.ts). Each test
// drives containers through ctr the way a node does and checks what the watcher made of containerd's events: the
// trace of each container (span names, parents, attributes), the metrics, and the findings of the post-delete leak
// check and of the stuck/dead detection. Spans go to an in-memory exporter; metrics are read from the one registry.
import { after, before, describe, test } from 'node:test';
import { CLI } from '../support/cli.js';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { Counter, Gauge, Histogram } from 'prom-client';
import { startContainerd, IMAGE, type TestContainerd } from '../support/containerd.js';
import { Watcher } from '@transship/containerd/watch/watcher';
import { BoundedSpanProcessor } from '@transship/containerd/watch/span-export';
import type { WatchFinding } from '@transship/containerd/watch/stuck';
import { createTask } from '../support/containerd-create-task.js';
import { containerdWatchEventsDroppedTotal, containerdWatchLeaksTotal, containerdWatchOomKillsTotal, containerdWatchPhaseDurationSeconds, containerdWatchReconciledTotal, containerdWatchResubscriptionsTotal, containerdWatchTasksStuckCreated, containerdWatchUnexpectedShimExitsTotal, containerdWatchExitEventsMissingTotal, containerdWatchTaskExitsTotal } from '@transship/containerd/metrics';

const BIN = CLI;

let c: TestContainerd;
let watcher: Watcher;
let exporter: InMemorySpanExporter;
const stop = new AbortController();
let running: Promise<void>;
// Reconnects wait ~6 s (jitter pinned), so the restart test can act on containerd while the watcher is away.
const RECONNECT_MS = 6000;

async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; watcher: ${JSON.stringify(watcher.status())}`);
    await sleep(50);
  }
}

function spansOf(id: string): ReadableSpan[] {
  return exporter.getFinishedSpans().filter((s) => s.attributes['container.id'] === id);
}

function span(id: string, name: string): ReadableSpan | undefined {
  return spansOf(id).find((s) => s.name === name);
}

function findingsOf(id: string): WatchFinding[] {
  return watcher.findings.filter((f) => f.containerId === id);
}

async function value(metric: Counter<string> | Gauge<string>, labels: Record<string, string> = {}): Promise<number> {
  const snap = await metric.get();
  return snap.values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0);
}

async function histogramCount(h: Histogram<string>, phase: string): Promise<number> {
  const snap = await h.get();
  return snap.values.find((v) => v.labels.phase === phase && (v as { metricName?: string }).metricName?.endsWith('_count'))?.value ?? 0;
}

async function ctrOk(args: string[]): Promise<void> {
  const r = await c.ctr(args);
  assert.equal(r.code, 0, `ctr ${args.join(' ')}: ${r.stderr}`);
}

/**
 * A task stuck in CREATED: created through the API (what `ctr task start` does first) and never started.
 */
async function freezeInCreated(id: string): Promise<void> {
  await ctrOk(['container', 'create', IMAGE, id, 'sleep', '100000']);
  await createTask(c.address, c.namespace, id);
  assert.equal(await c.taskStatus(id), 'CREATED');
}

/** Ends a container the way an operator does: SIGKILL the task, delete it, delete the container. */
async function removeContainer(id: string): Promise<void> {
  await c.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
  await until(`${id} stopped`, async () => (await c.taskStatus(id)) !== 'RUNNING');
  await c.ctr(['task', 'delete', id]);
  await ctrOk(['container', 'delete', id]);
}

before(async () => {
  c = await startContainerd();
  exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  watcher = new Watcher({
    address: c.address,
    stateDir: c.state,
    namespaces: [c.namespace],
    tracer: provider.getTracer('test'),
    leakCheck: { delayMs: 200, timeoutMs: 3000 },
    checkIntervalMs: 200,
    reconcileIntervalMs: 3_600_000,
    stuck: { createdThresholdMs: 1500, exitGraceMs: 1000 },
    retry: { baseDelayMs: RECONNECT_MS, maxDelayMs: RECONNECT_MS, random: () => 0.999 },
  });
  running = watcher.run(stop.signal);
  await watcher.ready(AbortSignal.timeout(20_000));
});

after(async () => {
  stop.abort();
  await running;
  await c?.stop();
});

describe('containerd watch on a real containerd', () => {
  test('full lifecycle with an exec → one trace: create, task create (shim socket, pid, listening), start, exec, exit, task delete, leak check, container delete', async () => {
    const before = await histogramCount(containerdWatchPhaseDurationSeconds, 'task_create');
    await c.runContainer('life1');
    const shimPid = await c.shimPid('life1');
    assert.ok(shimPid);
    // The watcher can only name a shim it saw alive: the whole lifecycle below takes less than one delivery window of
    // the event stream (500 ms), so the container ends only once the watcher has seen it start (issue 20 item 17).
    await until('life1 started', () => span('life1', 'containerd.task.start'));
    assert.equal((await c.ctr(['task', 'exec', '--exec-id', 'probe', 'life1', 'sh', '-c', 'exit 4'])).code, 4, 'ctr passes the exec status through');
    await removeContainer('life1');
    const root = await until('life1 trace to end', () => span('life1', 'containerd.container'));

    const children = spansOf('life1').filter((s) => s !== root);
    const names = children.map((s) => s.name);
    for (const n of ['containerd.container.create', 'containerd.task.create', 'containerd.task.start', 'containerd.task.exec', 'containerd.task.exit', 'containerd.task.delete', 'containerd.leak_check', 'containerd.container.delete']) {
      assert.ok(names.includes(n), `${n} in ${names.join(', ')}`);
    }
    for (const s of children) {
      assert.equal(s.spanContext().traceId, root.spanContext().traceId, `${s.name} is in the container's trace`);
      assert.equal(s.parentSpanContext?.spanId, root.spanContext().spanId, `${s.name} is a child of containerd.container`);
    }
    const create = span('life1', 'containerd.task.create');
    assert.equal(create?.attributes['containerd.shim.socket'], c.shimSocket('life1'));
    assert.equal(create?.attributes['containerd.shim.pid'], shimPid);
    assert.equal(create?.attributes['containerd.shim.socket_listening'], true);
    assert.equal(span('life1', 'containerd.task.exec')?.attributes['process.exit.code'], 4);
    assert.equal(span('life1', 'containerd.task.exit')?.attributes['process.exit.code'], 137);
    const leak = span('life1', 'containerd.leak_check');
    for (const k of ['shim', 'socket', 'bundle', 'rootfs', 'cgroup', 'runc_state']) assert.equal(leak?.attributes[`containerd.released.${k}`], true, `released.${k}`);
    assert.deepEqual(findingsOf('life1'), []);
    // The timeline is containerd's: each phase starts where the previous one ended.
    const start = span('life1', 'containerd.task.start');
    assert.ok(start && create && start.startTime[0] * 1e9 + start.startTime[1] >= create.startTime[0] * 1e9 + create.startTime[1]);
    assert.ok((await histogramCount(containerdWatchPhaseDurationSeconds, 'task_create')) > before);
  });

  test('a container that exits on its own with `ctr run --rm` → exit status on the exit span', async () => {
    assert.equal((await c.ctr(['run', '--rm', '--null-io', IMAGE, 'life2', 'sh', '-c', 'exit 3'])).code, 3, 'ctr passes the exit status through');
    await until('life2 trace to end', () => span('life2', 'containerd.container'));
    assert.equal(span('life2', 'containerd.task.exit')?.attributes['process.exit.code'], 3);
    assert.equal(span('life2', 'containerd.container')?.attributes['process.exit.code'], 3);
  });

  test('shim SIGKILLed → shim death reported and the leak check finds the socket it left behind', async () => {
    const shimsBefore = await value(containerdWatchUnexpectedShimExitsTotal, { namespace: c.namespace });
    const staleBefore = await value(containerdWatchLeaksTotal, { kind: 'stale-socket' });
    await c.runContainer('kill1');
    const shim = await c.shimPid('kill1');
    assert.ok(shim);
    await until('kill1 task create seen', () => span('kill1', 'containerd.task.create'));
    process.kill(shim, 'SIGKILL');
    const stale = await until('stale-socket finding', () => findingsOf('kill1').find((f) => f.code === 'stale-socket'));
    assert.equal(stale.evidence.path, c.shimSocket('kill1'));
    assert.ok(existsSync(c.shimSocket('kill1')), 'containerd 1.6 really left the socket');
    assert.ok(findingsOf('kill1').some((f) => f.code === 'task-shim-dead'), JSON.stringify(findingsOf('kill1')));
    assert.equal(await value(containerdWatchUnexpectedShimExitsTotal, { namespace: c.namespace }), shimsBefore + 1);
    assert.equal(await value(containerdWatchLeaksTotal, { kind: 'stale-socket' }), staleBefore + 1);
    const exit = span('kill1', 'containerd.task.exit');
    assert.equal(exit?.attributes['containerd.shim.died'], true);
    assert.equal(span('kill1', 'containerd.leak_check')?.attributes['containerd.released.socket'], false);
    await ctrOk(['container', 'delete', 'kill1']);
    await until('kill1 trace to end', () => span('kill1', 'containerd.container'));
  });

  test('a shim SIGKILLed right after `ctr run -d` returns is shim_died, 20 of 20; 20 short-lived normal containers never are (issue 16 defect 3)', async () => {
    const outcome = async (o: string): Promise<number> => value(containerdWatchTaskExitsTotal, { namespace: c.namespace, outcome: o });
    const diedBefore = await outcome('shim_died');
    const unexpectedBefore = await value(containerdWatchUnexpectedShimExitsTotal, { namespace: c.namespace });
    const early = Array.from({ length: 20 }, (_, i) => `early${i}`);
    for (const id of early) {
      // No pause: the shim dies before the watcher has even read the task's create (the race of the issue).
      await ctrOk(['run', '-d', '--null-io', IMAGE, id, 'sleep', '100000']);
      const shim = await c.shimPid(id);
      assert.ok(shim, `${id} has a shim`);
      process.kill(shim, 'SIGKILL');
    }
    for (const id of early) {
      const exit = await until(`${id} exit span`, () => span(id, 'containerd.task.exit'));
      assert.equal(exit.attributes['containerd.shim.died'], true, `${id}: ${JSON.stringify(exit.attributes)}`);
      assert.ok(findingsOf(id).some((f) => f.code === 'task-shim-dead'), `${id}: ${JSON.stringify(findingsOf(id))}`);
      await until(`${id} task gone`, async () => (await c.taskStatus(id)) === undefined);
      await ctrOk(['container', 'delete', id]);
    }
    assert.equal(await outcome('shim_died'), diedBefore + 20);
    assert.equal(await value(containerdWatchUnexpectedShimExitsTotal, { namespace: c.namespace }), unexpectedBefore + 20);
    for (const id of early) await until(`${id} trace to end`, () => span(id, 'containerd.container'));

    const zeroBefore = await outcome('zero');
    const short = Array.from({ length: 20 }, (_, i) => `short${i}`);
    for (const id of short) assert.equal((await c.ctr(['run', '--rm', '--null-io', IMAGE, id, 'sh', '-c', 'true'])).code, 0);
    for (const id of short) {
      await until(`${id} trace to end`, () => span(id, 'containerd.container'));
      assert.equal(span(id, 'containerd.task.exit')?.attributes['containerd.shim.died'], false, id);
      assert.equal(findingsOf(id).some((f) => f.code === 'task-shim-dead'), false, `${id}: ${JSON.stringify(findingsOf(id))}`);
    }
    assert.equal(await outcome('shim_died'), diedBefore + 20, 'no normal exit was called a shim death');
    assert.equal(await outcome('zero'), zeroBefore + 20);
  });

  test('real OOM kill under a 16 MiB memory limit → oom span, oom metric, exit 137 marked oom', async () => {
    const before = await value(containerdWatchOomKillsTotal, { namespace: c.namespace });
    await ctrOk(['run', '-d', '--null-io', '--memory-limit', String(16 * 1024 * 1024), IMAGE, 'oom1', '/bin/busybox', 'tail', '/dev/zero']);
    await until('oom1 exit span', () => span('oom1', 'containerd.task.exit'), 30_000);
    assert.ok(span('oom1', 'containerd.task.oom'), 'an OOM span');
    assert.equal(await value(containerdWatchOomKillsTotal, { namespace: c.namespace }), before + 1);
    const exit = span('oom1', 'containerd.task.exit');
    assert.equal(exit?.attributes['process.exit.code'], 137);
    assert.equal(exit?.attributes['containerd.oom'], true);
    await ctrOk(['task', 'delete', 'oom1']);
    await ctrOk(['container', 'delete', 'oom1']);
    await until('oom1 trace to end', () => span('oom1', 'containerd.container'));
    assert.deepEqual(findingsOf('oom1'), [], 'an OOM kill of the container (not the shim) leaks nothing');
  });

  test('task stuck in CREATED (created, never started) → finding and gauge; cleared once deleted', async () => {
    await freezeInCreated('stuck1');
    const f = await until('task-stuck-created finding', () => findingsOf('stuck1').find((x) => x.code === 'task-stuck-created'));
    assert.equal(f.severity, 'warning');
    assert.ok((await value(containerdWatchTasksStuckCreated, { namespace: c.namespace })) >= 1);
    await ctrOk(['task', 'delete', '--force', 'stuck1']);
    await ctrOk(['container', 'delete', 'stuck1']);
    await until('stuck gauge back to 0', async () => (await value(containerdWatchTasksStuckCreated, { namespace: c.namespace })) === 0);
  });

  test('hung shim (SIGSTOP) and its init SIGKILLed → exit-missing, then the late exit still closes the trace', async () => {
    const before = await value(containerdWatchExitEventsMissingTotal, { namespace: c.namespace });
    const pid = await c.runContainer('hung1');
    const shim = await c.shimPid('hung1');
    assert.ok(shim);
    await until('hung1 started', () => span('hung1', 'containerd.task.start'));
    process.kill(shim, 'SIGSTOP');
    try {
      process.kill(pid, 'SIGKILL'); // a zombie now: its parent, the shim, is stopped and cannot reap it or report it
      const f = await until('exit-missing finding', () => findingsOf('hung1').find((x) => x.code === 'exit-missing'));
      assert.equal(f.evidence.pid, pid);
      assert.equal(f.evidence.shimAlive, true);
      assert.equal(await value(containerdWatchExitEventsMissingTotal, { namespace: c.namespace }), before + 1);
      assert.equal(span('hung1', 'containerd.task.exit'), undefined, 'no exit was invented while the shim is hung');
    } finally {
      process.kill(shim, 'SIGCONT');
    }
    const exit = await until('late exit', () => span('hung1', 'containerd.task.exit'));
    assert.equal(exit.attributes['process.exit.code'], 137);
    await removeContainer('hung1');
    await until('hung1 trace to end', () => span('hung1', 'containerd.container'));
  });

  test('containerd restarted while watching → resubscribes; what happened while disconnected is reconciled', async () => {
    await c.runContainer('gone1');
    await until('gone1 started', () => span('gone1', 'containerd.task.start'));
    const resubs = await value(containerdWatchResubscriptionsTotal);
    const recDeletes = await value(containerdWatchReconciledTotal, { transition: 'container_delete' });
    const recCreates = await value(containerdWatchReconciledTotal, { transition: 'container_create' });
    await c.kill9();
    await until('watcher notices', () => !watcher.status().subscribed);
    await c.restart();
    // The watcher waits ~RECONNECT_MS before its next attempt: meanwhile a container ends and another one starts.
    await removeContainer('gone1');
    await c.runContainer('new1');
    assert.equal(watcher.status().subscribed, false, 'these happened while the watcher was disconnected');
    await until('resubscribed', async () => (await value(containerdWatchResubscriptionsTotal)) === resubs + 1, RECONNECT_MS * 3);
    const root = await until('gone1 trace to end', () => span('gone1', 'containerd.container'));
    assert.equal(span('gone1', 'containerd.container.delete')?.attributes['containerd.reconciled'], true);
    assert.ok(span('gone1', 'containerd.task.exit'), 'the missed exit has its span');
    assert.ok(span('gone1', 'containerd.leak_check'), 'and the post-delete check ran');
    assert.ok(root);
    assert.equal(await value(containerdWatchReconciledTotal, { transition: 'container_delete' }), recDeletes + 1);
    assert.ok((await value(containerdWatchReconciledTotal, { transition: 'container_create' })) >= recCreates + 1);
    const adopted = watcher.lifecycles.get(c.namespace, 'new1');
    assert.equal(adopted?.task?.state, 'running', 'a container started while disconnected is followed');
    // And the stream works again: a new lifecycle is traced from its events.
    await ctrOk(['run', '--rm', '--null-io', IMAGE, 'after1', 'true']);
    await until('after1 trace', () => span('after1', 'containerd.container'));
    assert.equal(span('after1', 'containerd.task.start')?.attributes['containerd.reconciled'], undefined);
    await removeContainer('new1');
  });

  test('event flood faster than a slow exporter drains → bounded queues, drops counted, no crash, state repaired', async () => {
    // A second watcher with a tiny queue behind an exporter that takes 1 s per batch of 2 spans during the flood
    // (a lifecycle makes ~8 spans), and is instant afterwards so the repair can be watched.
    let slowMs = 1000;
    const slow: SpanExporter = {
      export: (spans, done) => void sleep(slowMs).then(() => done({ code: 0 })),
      shutdown: async () => undefined,
    };
    const spans = new BoundedSpanProcessor(slow, { capacity: 16, batchSize: 2, flushDelayMs: 10 });
    const provider = new BasicTracerProvider({ spanProcessors: [spans] });
    const small = new Watcher({ address: c.address, stateDir: c.state, namespaces: [c.namespace], tracer: provider.getTracer('flood'), spans, queueCapacity: 8, checkIntervalMs: 1000, reconcileIntervalMs: 3_600_000, leakCheck: { delayMs: 100, timeoutMs: 2000 } });
    const ac = new AbortController();
    const run = small.run(ac.signal);
    try {
      await small.ready(AbortSignal.timeout(20_000));
      const droppedBefore = await value(containerdWatchEventsDroppedTotal, { reason: 'queue_full' });
      const ids = Array.from({ length: 24 }, (_, i) => `flood${i}`);
      for (let i = 0; i < ids.length; i += 6) await Promise.all(ids.slice(i, i + 6).map((id) => ctrOk(['run', '--rm', '--null-io', IMAGE, id, 'true'])));
      const s = small.status();
      assert.ok(s.eventsDropped > 0, `events were dropped: ${JSON.stringify(s)}`);
      assert.equal(await value(containerdWatchEventsDroppedTotal, { reason: 'queue_full' }), droppedBefore + s.eventsDropped);
      assert.ok(s.queueHighWater <= 8, 'the event queue never held more than its capacity');
      assert.ok(spans.backlog <= 16, 'the span queue never holds more than its capacity');
      slowMs = 0;
      // Every flood container is gone; the reconcile after the drops closes whatever the lost events left open.
      await until('flood containers all closed', () => ids.every((id) => small.lifecycles.get(c.namespace, id) === undefined), 60_000);
      assert.ok(small.status().reconciles >= 2, 'a reconcile ran after the drops');
      // Still alive and following: the main watcher traced every one of them.
      for (const id of ids) await until(`${id} in the main watcher`, () => span(id, 'containerd.container'));
    } finally {
      ac.abort();
      await run;
      await provider.shutdown();
    }
  });

  test('CLI: `watch --once --json` reconciles, checks and reports; exit 0 on a healthy node', async () => {
    await c.runContainer('cli1');
    const r = await cli(['watch', '--address', c.address, '--state', c.state, '--namespace', c.namespace, '--once', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { healthy: boolean; status: { containersTracked: number; subscribed: boolean }; findings: unknown[] };
    assert.equal(doc.healthy, true);
    assert.ok(doc.status.containersTracked >= 1);
    assert.deepEqual(doc.findings, []);
  });

  test('CLI: `watch --once` with a stuck CREATED task (threshold 0s would be refused; 1ms counts) → exit 3 naming it', async () => {
    await freezeInCreated('stuck2');
    const r = await cli(['watch', '--address', c.address, '--state', c.state, '--namespace', c.namespace, '--once', '--json', '--created-threshold', '1ms']);
    assert.equal(r.code, 3, r.stderr);
    const doc = JSON.parse(r.stdout) as { findings: Array<{ code: string; containerId: string }> };
    assert.ok(doc.findings.some((f) => f.code === 'task-stuck-created' && f.containerId === 'stuck2'), r.stdout);
    const zero = await cli(['watch', '--address', c.address, '--state', c.state, '--once', '--created-threshold', '0s']);
    assert.equal(zero.code, 2);
    assert.match(zero.stderr, /--created-threshold: must be greater than zero/);
    await ctrOk(['task', 'delete', '--force', 'stuck2']);
    await ctrOk(['container', 'delete', 'stuck2']);
  });

  test('CLI: long-running `watch --listen` serves /metrics and /healthz, follows containers, exits 0 on SIGTERM', async () => {
    const child = spawn(process.execPath, [BIN, 'watch', '--address', c.address, '--state', c.state, '--namespace', c.namespace, '--listen', '127.0.0.1:0'], {
      env: { ...process.env, TRANSSHIP_CONFIG: '', TRANSSHIP_LOG_LEVEL: 'warn' },
    });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const port = await until('listening line', () => /metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(stderr)?.[1], 30_000);
      const base = `http://127.0.0.1:${port}`;
      await until('healthy', async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.status === 200, 20_000);
      await ctrOk(['run', '--rm', '--null-io', IMAGE, 'cli3', 'true']);
      const text = await until('metrics with the lifecycle', async () => {
        const t = await (await fetch(`${base}/metrics`)).text();
        return /containerd_watch_phase_duration_seconds_count\{phase="lifetime"\} [1-9]/.test(t) ? t : undefined;
      });
      assert.match(text, /^containerd_watch_subscription_up 1$/m);
      assert.match(text, /containerd_watch_events_total\{topic="task-exit"\} [1-9]/);
      assert.equal((await fetch(`${base}/nope`)).status, 404);
      const findings = (await (await fetch(`${base}/findings`)).json()) as { findings: unknown[] };
      assert.ok(Array.isArray(findings.findings));
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, stderr);
  });

  test('CLI: containerd not there → `watch --once` exits 1 after its timeout; a bad --listen is a usage error', async () => {
    const gone = await cli(['watch', '--address', join(c.dir, 'nope.sock'), '--state', c.state, '--once', '--timeout', '500ms']);
    assert.equal(gone.code, 1, gone.stderr);
    const bad = await cli(['watch', '--address', c.address, '--state', c.state, '--listen', 'nowhere']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid --listen "nowhere": expected HOST:PORT/);
  });
});

async function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, TRANSSHIP_CONFIG: '' } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', (x) => resolve(x)));
  return { code, stdout, stderr };
}
