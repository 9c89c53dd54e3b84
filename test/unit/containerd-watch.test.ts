// The watcher's pure parts on plain data: the bounded queues, the lifecycle state machine (span tree from event
// sequences, including the out-of-order and missing events a real stream produces), the post-delete leak rules, the
// stuck/dead/missing-exit rules, the reconcile plan, cgroup path resolution and the config section. What containerd
// really does is checked in test/integration/containerd-watch.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { BoundedQueue } from '@transship/containerd/watch/queue';
import { BoundedSpanProcessor } from '@transship/containerd/watch/span-export';
import { OtlpTracer, unixNano, type OtlpSpan } from '@transship/containerd/watch/otlp-tracer';
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lifecycles, OOM_WAIT_MS, type ContainerTrack } from '@transship/containerd/watch/lifecycle';
import type { WatchEvent } from '@transship/containerd/watch/events';
import { LeakChecker, allReleased, leakFindings } from '@transship/containerd/watch/leak-check';
import { cgroupRelPath, expandSlice } from '@transship/containerd/cgroups';
import { LinuxHost, listeningIn, type HostProbe, type ReleaseReport, type ReleaseTarget, type TaskHostInfo } from '@transship/containerd/watch/host';
import { loadConfig } from '../../packages/transship/src/config/config.js';
import { parseHostPort } from '../../packages/transship/src/cli/args.js';
import { checkTracks } from '@transship/containerd/watch/stuck';
import { planReconcile, type ApiView } from '@transship/containerd/watch/reconcile';
import { TransshipError } from '@transship/core/errors';

const NS = 'ns1';

function info(id: string, over: Partial<TaskHostInfo> = {}): TaskHostInfo {
  return { bundle: `/state/io.containerd.runtime.v2.task/${NS}/${id}`, bundleWrittenAt: 900, groupId: id, socket: `/run/containerd/s/${id}`, socketListening: true, shim: { pid: 100, startTime: 5 }, cgroupDirs: [`/sys/fs/cgroup/memory/${NS}/${id}`], runcStateDir: `/run/containerd/runc/${NS}/${id}`, ...over };
}

const released: ReleaseReport = { shimExited: true, socketRemoved: true, socketListening: false, bundleRemoved: true, rootfsMounts: [], cgroupsRemoved: true, cgroupLeft: [], cgroupPids: [], runcStateRemoved: true };

function harness() {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const deleted: string[] = [];
  const lc = new Lifecycles(provider.getTracer('unit'), { taskDeleted: (c) => deleted.push(c.id) });
  const spans = (id: string): ReadableSpan[] => exporter.getFinishedSpans().filter((s) => s.attributes['container.id'] === id);
  const names = (id: string): string[] => spans(id).map((s) => s.name);
  return { lc, spans, names, deleted };
}

function ev<K extends WatchEvent['kind']>(kind: K, at: number, extra: Record<string, unknown> = {}): WatchEvent {
  return { kind, namespace: NS, id: 'c1', at, ...extra } as unknown as WatchEvent;
}

test('bounded queue: FIFO across the ring wrap, drops counted when full, never grows', () => {
  const dropped: number[] = [];
  const q = new BoundedQueue<number>(3, (x) => dropped.push(x));
  for (let i = 0; i < 5; i++) q.push(i);
  assert.deepEqual(dropped, [3, 4]);
  assert.equal(q.size, 3);
  assert.equal(q.shift(), 0);
  q.push(5);
  assert.deepEqual([q.shift(), q.shift(), q.shift(), q.shift()], [1, 2, 5, undefined]);
  assert.equal(q.highWater, 3);
  assert.equal(q.dropped, 2);
  assert.throws(() => new BoundedQueue(0), RangeError);
});

test('bounded queue: wait() resolves on push and on wake(), rejects with TS_CANCELLED on abort', async () => {
  const q = new BoundedQueue<string>(2);
  const ac = new AbortController();
  const w1 = q.wait(ac.signal);
  q.push('a');
  await w1;
  q.shift();
  const w2 = q.wait(ac.signal);
  q.wake();
  await w2;
  const w3 = q.wait(ac.signal);
  ac.abort();
  await assert.rejects(w3, (e: unknown) => e instanceof TransshipError && e.code === 'TS_CANCELLED');
});

test('lifecycle: full event sequence → one trace with every step as a child of containerd.container', () => {
  const h = harness();
  // Real epoch milliseconds: OpenTelemetry reads a small number as a performance.now() value when it is below the
  // process's uptime, so bare 800…1600 made start and end fall in different clocks in a freshly started process.
  const B = Date.now() - 60_000;
  h.lc.apply(ev('container-create', B + 800, { image: 'img', runtime: 'io.containerd.runc.v2' }));
  h.lc.apply(ev('task-create', B + 1000, { pid: 42, bundle: '/b' }), info('c1', { bundleWrittenAt: B + 900 }));
  h.lc.apply(ev('task-start', B + 1100, { pid: 42 }));
  h.lc.apply(ev('exec-added', B + 1200, { execId: 'e1' }));
  h.lc.apply(ev('exec-started', B + 1210, { execId: 'e1', pid: 43 }));
  h.lc.apply(ev('task-exit', B + 1300, { execId: 'e1', pid: 43, exitStatus: 2, exitedAt: B + 1300 }));
  h.lc.apply(ev('task-oom', B + 1400));
  h.lc.apply(ev('task-exit', B + 1410, { execId: 'c1', pid: 42, exitStatus: 137, exitedAt: B + 1410 }));
  h.lc.apply(ev('task-delete', B + 1500, { pid: 42, exitStatus: 137 }));
  assert.deepEqual(h.deleted, ['c1'], 'the delete asks for a leak check');
  h.lc.apply(ev('container-delete', B + 1600));
  assert.equal(h.names('c1').includes('containerd.container'), false, 'the trace stays open while the leak check is pending');
  h.lc.leakChecked({ target: { namespace: NS, id: 'c1', info: info('c1'), groupStillServing: false }, report: released, findings: [], shimGoneAfterMs: 200, checkedAfterMs: 200 });
  const all = h.spans('c1');
  const root = all.find((s) => s.name === 'containerd.container');
  assert.ok(root);
  assert.deepEqual(h.names('c1').sort(), ['containerd.container', 'containerd.container.create', 'containerd.container.delete', 'containerd.leak_check', 'containerd.task.create', 'containerd.task.delete', 'containerd.task.exec', 'containerd.task.exit', 'containerd.task.oom', 'containerd.task.start'].sort());
  for (const s of all) if (s !== root) assert.equal(s.parentSpanContext?.spanId, root.spanContext().spanId, s.name);
  const create = all.find((s) => s.name === 'containerd.task.create');
  const ms = (t: [number, number] | undefined): number => (t ? t[0] * 1000 + t[1] / 1e6 : NaN);
  assert.equal(Math.round(ms(create?.endTime) - ms(create?.startTime)), 100, 'task create runs from the bundle write (900) to the event (1000)');
  assert.equal(create?.attributes['containerd.shim.pid'], 100);
  const exit = all.find((s) => s.name === 'containerd.task.exit');
  assert.equal(exit?.attributes['containerd.oom'], true);
  assert.equal(exit?.status.code, 2, 'an OOM-killed exit is an error');
  assert.equal(all.find((s) => s.name === 'containerd.task.exec')?.attributes['process.exit.code'], 2);
  assert.equal(h.lc.size, 0);
});

test('lifecycle: an OOM event that comes after the SIGKILL exit still marks the exit oom; a plain SIGKILL is written after OOM_WAIT_MS', () => {
  const h = harness();
  const B = Date.now() - 60_000;
  h.lc.apply(ev('container-create', B + 800, { image: 'img', runtime: 'io.containerd.runc.v2' }));
  h.lc.apply(ev('task-create', B + 1000, { pid: 42, bundle: '/b' }), info('c1'));
  h.lc.apply(ev('task-start', B + 1100, { pid: 42 }));
  h.lc.apply(ev('task-exit', B + 1400, { execId: 'c1', pid: 42, exitStatus: 137, exitedAt: B + 1400 }));
  assert.equal(h.names('c1').includes('containerd.task.exit'), false, 'a SIGKILL exit waits for a late OOM event');
  h.lc.apply(ev('task-oom', B + 1410));
  const exit = h.spans('c1').find((s) => s.name === 'containerd.task.exit');
  assert.equal(exit?.attributes['containerd.oom'], true, 'the late OOM event is on the exit');
  assert.equal(exit?.attributes['process.exit.code'], 137);

  h.lc.apply(ev('container-create', B + 800, { id: 'c2', image: 'img', runtime: 'io.containerd.runc.v2' }));
  h.lc.apply(ev('task-create', B + 1000, { id: 'c2', pid: 52, bundle: '/b' }), info('c2'));
  h.lc.apply(ev('task-start', B + 1100, { id: 'c2', pid: 52 }));
  h.lc.apply(ev('task-exit', B + 1400, { id: 'c2', execId: 'c2', pid: 52, exitStatus: 137, exitedAt: B + 1400 }));
  h.lc.flushExits(Date.now() + OOM_WAIT_MS - 100);
  assert.equal(h.names('c2').includes('containerd.task.exit'), false, 'still waiting');
  h.lc.flushExits(Date.now() + OOM_WAIT_MS);
  const plain = h.spans('c2').find((s) => s.name === 'containerd.task.exit');
  assert.equal(plain?.attributes['containerd.oom'], false, 'no OOM event came: a plain SIGKILL');
  assert.equal(plain?.attributes['process.exit.code'], 137);
});

test('lifecycle: events of a container never seen created, duplicates, and a delete without exit', () => {
  const h = harness();
  h.lc.apply(ev('task-start', 1100, { pid: 7 })); // no task yet: ignored, but the container is now followed
  assert.equal(h.lc.get(NS, 'c1')?.createObserved, false);
  h.lc.apply(ev('task-create', 1000, { pid: 7, bundle: '/b' }), info('c1'));
  h.lc.apply(ev('task-create', 1001, { pid: 7, bundle: '/b' }), info('c1'));
  h.lc.apply(ev('task-start', 1100, { pid: 7 }));
  h.lc.apply(ev('task-delete', 1500, { pid: 7, exitStatus: 1 }));
  const exit = h.spans('c1').find((s) => s.name === 'containerd.task.exit');
  assert.equal(exit?.attributes['containerd.exit_event_missing'], true);
  assert.equal(h.names('c1').filter((n) => n === 'containerd.task.create').length, 1, 'a duplicate create is ignored');
  h.lc.apply(ev('task-exit', 1600, { execId: 'c1', pid: 7, exitStatus: 0, exitedAt: 1600 }));
  assert.equal(h.names('c1').filter((n) => n === 'containerd.task.exit').length, 1, 'a late exit after the delete is ignored');
});

test('lifecycle: a container delete with its task still open closes the task first (lost delete event)', () => {
  const h = harness();
  h.lc.apply(ev('container-create', 800, { image: 'i', runtime: 'r' }));
  h.lc.apply(ev('task-create', 1000, { pid: 9, bundle: '/b' }), info('c1'));
  h.lc.apply(ev('container-delete', 2000, { reconciled: true }));
  assert.deepEqual(h.deleted, ['c1']);
  assert.ok(h.names('c1').includes('containerd.task.delete'));
  assert.equal(h.spans('c1').find((s) => s.name === 'containerd.container.delete')?.attributes['containerd.reconciled'], true);
});

test('leak rules: released → nothing; each leftover → its doctor code; a serving group keeps shim and socket', () => {
  const t: ReleaseTarget = { namespace: NS, id: 'c1', info: info('c1'), groupStillServing: false };
  assert.deepEqual(leakFindings(t, released), []);
  assert.equal(allReleased(released), true);
  const stale = leakFindings(t, { ...released, socketRemoved: false });
  assert.deepEqual(stale.map((f) => f.code), ['stale-socket']);
  assert.equal(stale[0]?.evidence.path, '/run/containerd/s/c1');
  const shimLives = leakFindings(t, { ...released, shimExited: false, socketRemoved: false, socketListening: true });
  assert.deepEqual(shimLives.map((f) => f.code), ['orphaned-shim'], 'a socket its live shim listens on is not stale');
  const many = leakFindings(t, { ...released, bundleRemoved: false, rootfsMounts: ['/b/rootfs'], cgroupsRemoved: false, cgroupLeft: ['/cg'], cgroupPids: [], runcStateRemoved: false });
  assert.deepEqual(many.map((f) => f.code), ['leaked-bundle', 'leftover-rootfs-mount', 'leftover-cgroup', 'leftover-runc-state']);
  assert.deepEqual(leakFindings(t, { ...released, cgroupsRemoved: false, cgroupLeft: ['/cg'], cgroupPids: [12] }).map((f) => f.code), ['stray-container-processes']);
  assert.deepEqual(leakFindings({ ...t, groupStillServing: true }, { ...released, shimExited: undefined, socketRemoved: undefined }), []);
});

test('leak checker: re-checks with growing intervals and reports only what is still there at the timeout', () => {
  let now = 0;
  let calls = 0;
  let socketGoneAt = Number.POSITIVE_INFINITY;
  const host: HostProbe = {
    taskCreated: () => {
      throw new Error('unused');
    },
    findShim: () => undefined,
    listening: () => false,
    liveness: () => 'gone',
    exists: () => false,
    fallbackInfo: (ns, id) => info(id),
    released: () => {
      calls++;
      return { ...released, socketRemoved: now >= socketGoneAt };
    },
  };
  const results: string[][] = [];
  const lc = new LeakChecker(host, { delayMs: 100, timeoutMs: 1000 }, (r) => results.push(r.findings.map((f) => f.code)), () => now);
  lc.schedule({ namespace: NS, id: 'a', info: info('a'), groupStillServing: false }, 0);
  for (now = 0; now <= 1000; now += 10) lc.tick();
  assert.deepEqual(results, [['stale-socket']]);
  assert.ok(calls >= 3 && calls <= 6, `checked ${calls} times, not every tick`);
  lc.close();
  // The same, but the shim removes its socket late: no finding.
  socketGoneAt = 450;
  const lc2 = new LeakChecker(host, { delayMs: 100, timeoutMs: 1000 }, (r) => results.push(r.findings.map((f) => f.code)), () => now);
  lc2.schedule({ namespace: NS, id: 'b', info: info('b'), groupStillServing: false }, 0);
  for (now = 0; now <= 1000; now += 10) lc2.tick();
  assert.deepEqual(results[1], []);
  assert.equal(lc2.size, 0);
  lc2.close();
});

test('leak checker, paced: no timer of its own while the event stream polls (each timer was an empty wakeup); its own timer again once unpaced', async () => {
  const host: HostProbe = {
    taskCreated: () => {
      throw new Error('unused');
    },
    findShim: () => undefined,
    listening: () => false,
    liveness: () => 'gone',
    exists: () => false,
    fallbackInfo: (ns, id) => info(id),
    released: () => released,
  };
  const done: string[] = [];
  const lc = new LeakChecker(host, { delayMs: 10, timeoutMs: 1000, batchMs: 0 }, (r) => done.push(r.target.id));
  lc.setPaced(true);
  lc.schedule({ namespace: NS, id: 'a', info: info('a'), groupStillServing: false });
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(done, [], 'paced: the check waits for the next tick, no timer fired');
  lc.tick();
  assert.deepEqual(done, ['a'], 'the paced tick (after a poll) runs the due check');
  lc.schedule({ namespace: NS, id: 'b', info: info('b'), groupStillServing: false });
  lc.setPaced(false);
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(done, ['a', 'b'], 'unpaced (the stream went quiet): the pending check runs on its own timer');
  lc.close();
});

test('shim of a task whose init is already gone: found among the children of the shims\' parent (learned from a live init), by its command line; not looked for once its socket stopped listening', async () => {
  const root = mkdtempSync(join(tmpdir(), 'ts-watch-host-'));
  try {
    const proc = join(root, 'proc');
    const sockDir = join(root, 's');
    const address = join(root, 'containerd.sock');
    const put = (rel: string, text: string): void => {
      mkdirSync(join(root, rel, '..'), { recursive: true });
      writeFileSync(join(root, rel), text);
    };
    // /proc/<pid>/stat: state, ppid, 17 fields, then starttime (field 22).
    const stat = (pid: number, comm: string, ppid: number, start: number): void => put(`proc/${pid}/stat`, `${pid} (${comm}) S ${ppid} ${'0 '.repeat(17)}${start} 0 0\n`);
    const shim = (pid: number, id: string): void => {
      put(`proc/${pid}/cmdline`, ['/usr/bin/containerd-shim-runc-v2', '-namespace', NS, '-id', id, '-address', address, ''].join('\0'));
      stat(pid, 'containerd-shim', 7, 1000 + pid);
    };
    const bundle = (id: string): string => {
      put(`bundles/${id}/config.json`, '{}');
      put(`bundles/${id}/address`, `unix://${sockDir}/${id}`);
      return join(root, 'bundles', id);
    };
    const listening = (...ids: string[]): void =>
      put('proc/self/net/unix', ['Num       RefCount Protocol Flags    Type St Inode Path', ...ids.map((id, i) => `0000000000000000: 00000002 00000000 00010000 0001 01 ${100 + i} ${sockDir}/${id}`), ''].join('\n'));
    const host = new LinuxHost({ address, stateDir: join(root, 'state'), socketDir: sockDir, procRoot: proc, cgroupRoot: join(root, 'cgroup'), runcRoot: join(root, 'runc') });
    // c1's init is alive: its parent is the shim, whose own parent (7) adopts every shim.
    shim(400, 'c1');
    stat(500, 'sh', 400, 5000);
    listening('c1', 'c2');
    assert.deepEqual((host.taskCreated(NS, 'c1', 500, bundle('c1'))).shim, { pid: 400, startTime: 1400 });
    // c2's init (610) is gone; 7's children: c1's shim, c2's shim (600), another container's shim (605) closer below.
    shim(600, 'c2');
    shim(605, 'c3');
    put('proc/7/task/7/children', '400 600 605 700 ');
    assert.deepEqual((host.taskCreated(NS, 'c2', 610, bundle('c2'))).shim, { pid: 600, startTime: 1600 }, 'the shim that names c2, not the closest pid');
    // Socket no longer listening: the shim was shut down, nothing to look for (a pid found now would not be it).
    listening('c1');
    const late = host.taskCreated(NS, 'c2', 610, bundle('c2'));
    assert.equal(late.socketListening, false);
    assert.equal(late.shim, undefined);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('shim of a task whose init is gone and whose shim parent is not known yet: found by its command line in /proc, never a `shim start`/`delete` invocation with the same flags (issue 20 item 17)', () => {
  const root = mkdtempSync(join(tmpdir(), 'ts-watch-scan-'));
  try {
    const proc = join(root, 'proc');
    const sockDir = join(root, 's');
    const address = join(root, 'containerd.sock');
    const put = (rel: string, text: string): void => {
      mkdirSync(join(root, rel, '..'), { recursive: true });
      writeFileSync(join(root, rel), text);
    };
    const proc1 = (pid: number, argv: string[]): void => {
      put(`proc/${pid}/cmdline`, [...argv, ''].join('\0'));
      put(`proc/${pid}/stat`, `${pid} (containerd-shim) S 1 ${'0 '.repeat(17)}${1000 + pid} 0 0\n`);
      symlinkSync(argv[0] ?? '', join(proc, String(pid), 'exe'));
    };
    const shimBin = '/usr/bin/containerd-shim-runc-v2';
    // Lower pids first in readdir order: the `start` and `delete` invocations must not be taken for the shim.
    proc1(300, [shimBin, '-namespace', NS, '-address', address, '-publish-binary', '/usr/bin/containerd', '-id', 'c9', 'start']);
    proc1(301, [shimBin, '-namespace', NS, '-address', address, '-publish-binary', '/usr/bin/containerd', '-id', 'c9', '-bundle', '/b', 'delete']);
    proc1(302, [shimBin, '-namespace', NS, '-id', 'c9', '-address', '/other/containerd.sock']);
    proc1(4000, [shimBin, '-namespace', NS, '-id', 'c9', '-address', address, '-debug']);
    put('bundles/c9/config.json', '{}');
    put('bundles/c9/address', `unix://${sockDir}/c9`);
    put('proc/self/net/unix', `Num       RefCount Protocol Flags    Type St Inode Path\n0000000000000000: 00000002 00000000 00010000 0001 01 100 ${sockDir}/c9\n`);
    const host = new LinuxHost({ address, stateDir: join(root, 'state'), socketDir: sockDir, procRoot: proc, cgroupRoot: join(root, 'cgroup'), runcRoot: join(root, 'runc') });
    assert.deepEqual(host.taskCreated(NS, 'c9', 5000, join(root, 'bundles', 'c9')).shim, { pid: 4000, startTime: 5000 });
    assert.deepEqual(host.findShim(NS, 'c9', 0), { pid: 4000, startTime: 5000 });
    assert.equal(host.findShim(NS, 'c8', 0), undefined);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

function tracked(h: ReturnType<typeof harness>, id: string, state: 'created' | 'running', at: number): ContainerTrack {
  h.lc.apply({ kind: 'task-create', namespace: NS, id, at, pid: 42, bundle: '/b' }, info(id));
  if (state === 'running') h.lc.apply({ kind: 'task-start', namespace: NS, id, at: at + 1, pid: 42 });
  const c = h.lc.get(NS, id);
  assert.ok(c);
  return c;
}

test('stuck rules: CREATED past the threshold (once), shim gone past the grace (once), init gone past the grace without exit', () => {
  const h = harness();
  tracked(h, 'made', 'created', 0);
  tracked(h, 'run', 'running', 0);
  const live = new Map<number, 'alive' | 'zombie' | 'gone'>([
    [100, 'alive'],
    [42, 'alive'],
  ]);
  let socketLeft = true;
  const probe = { liveness: (pid: number): 'alive' | 'zombie' | 'gone' => live.get(pid) ?? 'gone', exists: () => socketLeft };
  const opts = { createdThresholdMs: 1000, exitGraceMs: 500 };
  let r = checkTracks(h.lc.all(), probe, 999, opts);
  assert.equal(r.stuckByNamespace.get(NS), 0);
  assert.deepEqual(r.detections, []);
  r = checkTracks(h.lc.all(), probe, 1000, opts);
  assert.equal(r.stuckByNamespace.get(NS), 1);
  assert.deepEqual(r.detections.map((d) => [d.finding.code, d.track.id]), [['task-stuck-created', 'made']]);
  r = checkTracks(h.lc.all(), probe, 2000, opts);
  assert.equal(r.stuckByNamespace.get(NS), 1, 'still stuck: the gauge keeps counting it');
  assert.deepEqual(r.detections, [], 'but the finding is reported once');
  live.set(42, 'zombie');
  r = checkTracks(h.lc.all(), probe, 3000, opts);
  assert.deepEqual(r.detections, [], 'the grace starts now');
  r = checkTracks(h.lc.all(), probe, 3500, opts);
  assert.deepEqual(r.detections.map((d) => [d.finding.code, d.track.id]), [['exit-missing', 'run']]);
  live.delete(100);
  socketLeft = false;
  checkTracks(h.lc.all(), probe, 4000, opts);
  r = checkTracks(h.lc.all(), probe, 4600, opts);
  assert.deepEqual(r.shimDeaths, [], 'a shim that unlinked its socket exited cleanly (its task delete is on its way)');
  socketLeft = true;
  r = checkTracks(h.lc.all(), probe, 5000, opts);
  assert.deepEqual(r.shimDeaths, [], 'gone with its socket left: the grace starts now');
  r = checkTracks(h.lc.all(), probe, 5500, opts);
  assert.deepEqual(r.shimDeaths.map((d) => d.track.id).sort(), ['made', 'run']);
  r = checkTracks(h.lc.all(), probe, 6000, opts);
  assert.deepEqual(r.shimDeaths, [], 'a dead shim is counted once');
});

test('reconcile plan: adopts the unknown, closes what vanished, supplies missed starts and exits', () => {
  const h = harness();
  tracked(h, 'vanished', 'running', 0);
  tracked(h, 'taskgone', 'running', 0);
  tracked(h, 'started', 'created', 0);
  tracked(h, 'stopped', 'running', 0);
  const view: ApiView = {
    takenAt: 5000,
    namespaces: [NS],
    containers: ['taskgone', 'started', 'stopped', 'fresh'].map((id) => ({ namespace: NS, id, image: 'i', runtime: 'r', createdAt: 10 })),
    tasks: [
      { namespace: NS, id: 'started', pid: 42, status: 'RUNNING', exitStatus: 0, exitedAt: undefined },
      { namespace: NS, id: 'stopped', pid: 42, status: 'STOPPED', exitStatus: 3, exitedAt: 4000 },
      { namespace: NS, id: 'fresh', pid: 50, status: 'CREATED', exitStatus: 0, exitedAt: undefined },
    ],
  };
  const plan = planReconcile(view, h.lc.all());
  assert.deepEqual(plan.adopt.map((a) => [a.container.id, a.task?.status]), [['fresh', 'CREATED']]);
  const got = plan.events.map((e) => `${e.kind}:${'id' in e ? e.id : ''}`);
  assert.deepEqual(got, ['task-exit:vanished', 'container-delete:vanished', 'task-exit:taskgone', 'task-delete:taskgone', 'task-start:started', 'task-exit:stopped']);
  assert.ok(plan.events.every((e) => e.reconciled === true));
  const stoppedExit = plan.events.find((e) => e.kind === 'task-exit' && e.id === 'stopped');
  assert.equal(stoppedExit?.kind === 'task-exit' ? stoppedExit.exitStatus : undefined, 3);
  // Applying the plan twice is harmless: the second plan is empty but for the still-unknown container.
  for (const e of plan.events) h.lc.apply(e);
  assert.deepEqual(planReconcile(view, h.lc.all()).events, []);
});

test('reconcile plan, periodic: a difference is acted on only when the next periodic reconcile sees it again', () => {
  const h = harness();
  tracked(h, 'old', 'running', 0);
  const view: ApiView = { takenAt: 10_000, namespaces: [NS], containers: [{ namespace: NS, id: 'young', image: 'i', runtime: 'r', createdAt: 9_500 }], tasks: [] };
  const first = planReconcile(view, h.lc.all(), { confirmed: new Set(), settleMs: 2000 });
  assert.deepEqual(first.events, [], 'the delete events of "old" may still be in flight');
  assert.deepEqual(first.adopt, [], 'the create events of "young" may still be in flight');
  assert.deepEqual([...first.suspects].sort(), [`${NS}\u0000old`, `${NS}\u0000young`].sort());
  const second = planReconcile({ ...view, takenAt: 40_000 }, h.lc.all(), { confirmed: first.suspects, settleMs: 2000 });
  assert.deepEqual(second.events.map((e) => e.kind), ['task-exit', 'container-delete']);
  assert.deepEqual(second.adopt.map((a) => a.container.id), ['young']);
});

test('lifecycle: late events of a container a reconcile already closed do not open a second trace', () => {
  const h = harness();
  tracked(h, 'c1', 'running', Date.now() - 100);
  const t = Date.now() - 50;
  h.lc.apply({ kind: 'container-delete', namespace: NS, id: 'c1', at: t, reconciled: true });
  h.lc.leakChecked({ target: { namespace: NS, id: 'c1', info: info('c1'), groupStillServing: false }, report: released, findings: [], shimGoneAfterMs: 1, checkedAfterMs: 1 });
  assert.equal(h.lc.size, 0);
  h.lc.apply(ev('task-exit', t - 10, { execId: 'c1', pid: 42, exitStatus: 0, exitedAt: t - 10 }));
  h.lc.apply(ev('task-delete', t - 5, { pid: 42, exitStatus: 0 }));
  assert.equal(h.lc.size, 0, 'late events were ignored');
  assert.equal(h.names('c1').filter((n) => n === 'containerd.container').length, 1);
  h.lc.apply(ev('container-create', Date.now(), { image: 'i', runtime: 'r' }));
  assert.equal(h.lc.size, 1, 'a new container of the same id is a new life');
});

test('span export: a slow exporter fills the bounded span queue, drops are counted, waitBelow() pushes back', async () => {
  let exporting = 0;
  const spans = new BoundedSpanProcessor({ export: (b, done) => void sleep(30).then(() => { exporting += b.length; done({ code: 0 }); }), shutdown: async () => undefined }, { capacity: 4, batchSize: 2, flushDelayMs: 1 });
  const provider = new BasicTracerProvider({ spanProcessors: [spans] });
  const tracer = provider.getTracer('unit');
  for (let i = 0; i < 20; i++) tracer.startSpan(`s${i}`).end();
  assert.ok(spans.backlog <= 4);
  assert.ok(spans.dropped > 0, 'spans beyond the capacity were dropped and counted');
  await spans.waitBelow(0, AbortSignal.timeout(5000));
  await provider.shutdown();
  assert.equal(exporting + spans.dropped, 20);
});

test('cgroup paths: cgroupfs and systemd forms of linux.cgroupsPath', () => {
  assert.equal(expandSlice('kubepods-besteffort-pod12.slice'), 'kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice');
  assert.equal(expandSlice('-.slice'), '');
  assert.equal(cgroupRelPath('/k8s.io/abc', 'abc'), '/k8s.io/abc');
  assert.equal(cgroupRelPath('kubepods-pod1.slice:cri-containerd:abc', 'abc'), '/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope');
  assert.equal(cgroupRelPath('', 'abc'), '/abc');
});

test('config: watch section from file and environment, with precise messages', () => {
  const c = loadConfig({ env: { TRANSSHIP_CONTAINERD_ADDRESS: '/x.sock', TRANSSHIP_WATCH_LISTEN: '0.0.0.0:9469' }, flags: { watch: { createdThreshold: '2m' } } });
  assert.equal(c.watch?.address, '/x.sock');
  assert.equal(c.watch?.listen, '0.0.0.0:9469');
  assert.equal(c.watch?.createdThreshold, '2m');
  assert.throws(
    () => loadConfig({ env: {}, flags: { watch: { exitGrace: 'soon' } } }),
    (e: unknown) => e instanceof TransshipError && e.code === 'TS_CONFIG_INVALID' && /watch\.exitGrace: /.test(e.message),
  );
  assert.throws(() => loadConfig({ env: {}, flags: { watch: { queueSize: 0 } } }), (e: unknown) => e instanceof TransshipError && /watch\.queueSize/.test(e.message));
  assert.deepEqual(parseHostPort('[::1]:9469'), { host: '::1', port: 9469 });
  assert.throws(() => parseHostPort('9469'), (e: unknown) => e instanceof TransshipError && e.code === 'TS_USAGE');
});

test('socket table: a task create judges only the rows naming its shim socket (no whole-table parse), by the listen flag', () => {
  const head = 'Num       RefCount Protocol Flags    Type St Inode Path\n';
  const row = (flags: string, st: string, inode: number, path: string): string => `0000000000000000: 00000002 00000000 ${flags} 0001 ${st} ${inode} ${path}`;
  const table = head + [row('00010000', '01', 1, '/run/containerd/s/abc'), row('00000000', '03', 2, '/run/containerd/s/abcd'), row('00010000', '01', 3, '/tmp/with space/sock'), row('00000000', '03', 4, '/run/containerd/s/conn')].join('\n') + '\n';
  assert.equal(listeningIn(table, '/run/containerd/s/abc'), true);
  assert.equal(listeningIn(table, '/run/containerd/s/ab'), false, 'a prefix of another socket path is not that socket');
  assert.equal(listeningIn(table, '/run/containerd/s/abcd'), false, 'bound but not listening');
  assert.equal(listeningIn(table, '/run/containerd/s/conn'), false);
  assert.equal(listeningIn(table, '/tmp/with space/sock'), true);
  assert.equal(listeningIn(table, '/run/containerd/s/none'), false);
  assert.equal(listeningIn(table.trimEnd(), '/run/containerd/s/conn'), false, 'last row without its newline');
  assert.equal(listeningIn(head + row('00010000', '01', 9, '/last'), '/last'), true, 'last row without its newline, listening');
});

test('OTLP tracer: a lifecycle through Lifecycles → one OTLP/JSON trace (parents, exact ns times, typed attributes, status)', async () => {
  const bodies: Array<{ resourceSpans: Array<{ resource: { attributes: unknown[] }; scopeSpans: Array<{ spans: OtlpSpan[] }> }> }> = [];
  let answer = 200;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (answer === 200) bodies.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as (typeof bodies)[number]);
      res.writeHead(answer, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/v1/traces`;
  const tracer = new OtlpTracer({ url, serviceName: 'unit', flushDelayMs: 10_000 });
  try {
    const lc = new Lifecycles(tracer);
    const B = 1764063000_000;
    lc.apply(ev('container-create', B + 800.25, { image: 'img', runtime: 'io.containerd.runc.v2' }));
    lc.apply(ev('task-create', B + 1000, { pid: 42, bundle: '/b' }), info('c1', { bundleWrittenAt: B + 900 }));
    lc.apply(ev('task-start', B + 1100, { pid: 42 }));
    lc.apply(ev('task-oom', B + 1150));
    lc.apply(ev('task-exit', B + 1200, { execId: 'c1', pid: 42, exitStatus: 137, exitedAt: B + 1200 }));
    lc.apply(ev('task-delete', B + 1300, { pid: 42, exitStatus: 137 }));
    lc.apply(ev('container-delete', B + 1400));
    lc.leakChecked({ target: { namespace: NS, id: 'c1', info: info('c1'), groupStillServing: false }, report: released, findings: [], shimGoneAfterMs: 10, checkedAfterMs: 500 });
    await tracer.forceFlush();
    const spans = bodies.flatMap((b) => b.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans)));
    assert.deepEqual(bodies[0]?.resourceSpans[0]?.resource.attributes, [{ key: 'service.name', value: { stringValue: 'unit' } }]);
    const root = spans.find((s) => s.name === 'containerd.container');
    assert.ok(root && root.parentSpanId === undefined);
    assert.equal(root.startTimeUnixNano, '1764063000800250000', 'exact nanoseconds, sub-millisecond part kept');
    assert.equal(root.endTimeUnixNano, '1764063001800000000', 'the root ends with the leak check (delete + 500 ms)');
    assert.match(root.traceId, /^[0-9a-f]{32}$/);
    assert.match(root.spanId, /^[0-9a-f]{16}$/);
    const children = spans.filter((s) => s !== root);
    assert.deepEqual(children.map((s) => s.name).sort(), ['containerd.container.create', 'containerd.container.delete', 'containerd.leak_check', 'containerd.task.create', 'containerd.task.delete', 'containerd.task.exit', 'containerd.task.oom', 'containerd.task.start']);
    for (const s of children) {
      assert.equal(s.traceId, root.traceId);
      assert.equal(s.parentSpanId, root.spanId);
      assert.equal(s.kind, 1);
    }
    const create = children.find((s) => s.name === 'containerd.task.create');
    const attr = (s: OtlpSpan | undefined, k: string): unknown => s?.attributes.find((a) => a.key === k)?.value;
    assert.deepEqual(attr(create, 'process.pid'), { intValue: 42 });
    assert.deepEqual(attr(create, 'containerd.shim.socket_listening'), { boolValue: true });
    assert.deepEqual(attr(create, 'containerd.shim.socket'), { stringValue: '/run/containerd/s/c1' });
    assert.equal(create?.startTimeUnixNano, '1764063000900000000', 'task create starts when the bundle was written');
    const exit = children.find((s) => s.name === 'containerd.task.exit');
    assert.deepEqual(exit?.status, { code: 2, message: 'OOM killed' });
    assert.deepEqual(attr(children.find((s) => s.name === 'containerd.leak_check'), 'containerd.leaks'), { arrayValue: { values: [] } });
    assert.deepEqual(attr(root, 'process.exit.code'), { intValue: 137 });

    // A collector that refuses (HTTP 400, not retried) costs the batch, counted as failed; the watcher goes on.
    answer = 400;
    tracer.startSpan('x').end();
    await tracer.forceFlush();
    assert.equal(tracer.exported, spans.length);
  } finally {
    await tracer.shutdown();
    server.close();
  }
});

test('OTLP tracer: the span queue is bounded (drops counted) and nanosecond times are exact', () => {
  const tracer = new OtlpTracer({ url: 'http://127.0.0.1:9/v1/traces', serviceName: 'unit', capacity: 3, batchSize: 100, flushDelayMs: 60_000 });
  for (let i = 0; i < 5; i++) tracer.startSpan(`s${i}`).end(1000 + i);
  assert.equal(tracer.spans.backlog, 3);
  assert.equal(tracer.spans.dropped, 2);
  assert.equal(unixNano(1764063000123.5), '1764063000123500000');
  assert.equal(unixNano(1764063000123.0625), '1764063000123062500');
  assert.equal(unixNano(1764063000999 + 0.9999999), '1764063001000000000', 'rounding carries into the millisecond');
  assert.equal(unixNano(0.5), '500000');
  assert.throws(() => new OtlpTracer({ url: 'ftp://x/v1/traces', serviceName: 'unit' }), (e: unknown) => e instanceof TransshipError && e.code === 'TS_USAGE');
  void tracer.shutdown();
});
