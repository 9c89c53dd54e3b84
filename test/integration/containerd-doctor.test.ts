// The doctor against a real containerd 1.6 + runc (private instance, see test/support/containerd.ts). Each test
// reproduces one leftover the way it happens on a node, checks the doctor names it with the right evidence, repairs it
// with --fix --yes so the same container id starts again with `ctr`, and checks that a healthy container running
// beside it was not touched (same pid, still RUNNING).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startContainerd, IMAGE, type TestContainerd } from '../support/containerd.js';
import { runDoctor, type DoctorOptions, type DoctorResult } from '@transship/containerd/doctor';
import type { Finding, FindingCode } from '@transship/containerd/findings';

const run = promisify(execFile);

let c: TestContainerd;
let healthyPid: number;

async function doctor(extra: Partial<DoctorOptions> = {}): Promise<DoctorResult & { output: string }> {
  let output = '';
  const r = await runDoctor({
    address: c.address,
    stateDir: c.state,
    namespaces: [c.namespace],
    minBundleAgeMs: 0,
    createdThresholdMs: 3_600_000,
    logs: false,
    killGraceMs: 2000,
    write: (s) => {
      output += s;
    },
    ...extra,
  });
  return { ...r, output };
}

function find(findings: Finding[], code: FindingCode, id: string): Finding | undefined {
  return findings.find((f) => f.code === code && f.containerId === id);
}

async function assertHealthyUntouched(): Promise<void> {
  assert.equal(await c.taskStatus('healthy'), 'RUNNING');
  assert.equal(await c.taskPid('healthy'), healthyPid, 'the healthy container kept its pid');
}

/**
 * Runs --fix until `id`'s bundle is gone (containerd's own dead-shim clean-up may be removing it at the same time: a
 * run then sees its `shim delete` and rightly waits), and checks that no run ever failed or touched another id.
 */
async function fixUntilGone(id: string, auditLog?: string): Promise<void> {
  for (let i = 0; i < 50 && existsSync(c.bundleDir(id)); i++) {
    const fixed = await doctor({ fix: true, yes: true, auditLog });
    assert.equal(fixed.results.filter((r) => r.outcome === 'failed').length, 0, fixed.output);
    assert.ok(fixed.results.every((r) => r.action.containerId === id), fixed.output);
    if (existsSync(c.bundleDir(id))) await sleep(200);
  }
  assert.equal(existsSync(c.bundleDir(id)), false, `${id}'s bundle is gone`);
  const after = await doctor();
  assert.equal(find(after.before.findings, 'leaked-bundle', id), undefined, after.output);
}

async function startAgain(id: string): Promise<void> {
  const r = await c.ctr(['task', 'start', '-d', '--null-io', id]);
  assert.equal(r.code, 0, `ctr task start ${id}: ${r.stderr}`);
  assert.equal(await c.taskStatus(id), 'RUNNING');
}

/** A unix socket file with no listener: bound by a process that is then SIGKILLed (Node would unlink on close). */
async function plantStaleSocket(path: string): Promise<void> {
  c.trackSocket(path);
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  await new Promise((resolve) => child.on('exit', resolve));
  assert.ok(existsSync(path));
}

/**
 * A foreign listener on `id`'s shim socket path: a ttrpc frame header with an unknown message type, connection kept
 * open. containerd 1.6 then fails the create with "unknown message type received" and leaves the bundle behind (a
 * listener that just closes the connection gives "ttrpc: closed" and a clean-up instead, so the frame is pinned).
 */
async function foreignListener(id: string): Promise<{ path: string; connections: () => number; close: () => Promise<void> }> {
  const path = c.shimSocket(id);
  c.trackSocket(path);
  const conns = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    conns.add(s);
    s.on('close', () => conns.delete(s));
    s.on('error', () => undefined);
    s.write(Buffer.from('00000000000000017f00', 'hex'));
  });
  await new Promise<void>((resolve) => srv.listen(path, resolve));
  return {
    path,
    connections: () => conns.size,
    close: () =>
      new Promise<void>((resolve) => {
        srv.close(() => resolve());
        for (const s of conns) s.destroy();
      }),
  };
}

before(async () => {
  c = await startContainerd();
  healthyPid = await c.runContainer('healthy');
});

after(async () => {
  await c?.stop();
});

describe('containerd doctor on a real containerd', () => {
  test('healthy node: exit 0, no findings, --json and --prometheus written', async () => {
    const prom = join(c.dir, 'doctor.prom');
    const r = await doctor({ json: true, prometheus: prom });
    assert.equal(r.exitCode, 0, r.output);
    const doc = JSON.parse(r.output) as { healthy: boolean; findings: unknown[]; counts: { tasks: number } };
    assert.equal(doc.healthy, true);
    assert.deepEqual(doc.findings, []);
    assert.equal(doc.counts.tasks, 1);
    const text = await readFile(prom, 'utf8');
    assert.match(text, /^containerd_doctor_up 1$/m);
    assert.match(text, /containerd_doctor_findings\{code="leaked-bundle",severity="critical"\} 0/);
  });

  test('a second containerd in the same namespace: its healthy containers are never reported; a shared id is an info hazard naming both; --fix leaves them alone (issue 16 defect 1)', async () => {
    // Same namespace, default runc root and cgroupfs paths: B's containers land in /run/containerd/runc/<ns>/<id> and
    // /sys/fs/cgroup/…/<ns>/<id>, where this instance's doctor looks too.
    const b = await startContainerd({ namespace: c.namespace });
    try {
      const n1 = await b.runContainer('n1');
      const d = await doctor();
      assert.equal(d.exitCode, 0, d.output);
      assert.equal(d.before.findings.some((f) => f.containerId === 'n1'), false, d.output);
      // The same id in both instances: a container n2 here (no task), a running n2 there.
      assert.equal((await c.ctr(['container', 'create', IMAGE, 'n2', 'sleep', '100000'])).code, 0);
      const n2 = await b.runContainer('n2');
      const fixed = await doctor({ fix: true, yes: true });
      const hazard = find(fixed.before.findings, 'instance-collision', 'n2');
      assert.ok(hazard, fixed.output);
      assert.equal(hazard.severity, 'info');
      assert.equal(hazard.evidence.thisInstance, c.address);
      assert.equal(hazard.evidence.otherInstance, b.address);
      assert.equal(fixed.before.findings.filter((f) => f.containerId === 'n1' || f.containerId === 'n2').length, 1, fixed.output);
      assert.equal(fixed.exitCode, 0, fixed.output);
      assert.deepEqual(fixed.results.filter((r) => r.action.containerId === 'n1' || r.action.containerId === 'n2'), [], '--fix never acts on the other instance');
      assert.equal(await b.taskStatus('n1'), 'RUNNING');
      assert.equal(await b.taskPid('n1'), n1);
      assert.equal(await b.taskPid('n2'), n2);
      assert.equal((await c.ctr(['container', 'delete', 'n2'])).code, 0);
    } finally {
      await b.stop();
    }
    await assertHealthyUntouched();
  });

  test('a bundle left by a failed create is named by a doctor run 2 s later with the default thresholds, with its age (issue 16 defect 2)', async () => {
    const listener = await foreignListener('f2');
    const created = await c.ctr(['run', '-d', '--null-io', IMAGE, 'f2', 'sleep', '100000'], { timeoutMs: 15_000 });
    const failedAt = Date.now();
    assert.notEqual(created.code, 0, 'ctr run must fail while a foreign process holds the socket');
    const bundle = c.bundleDir('f2');
    // containerd's clean-up of the failed create (`shim delete`) runs after ctr's error: while it does, a clean-up is in
    // flight and the doctor rightly waits. The state under test is "bundle left, nothing of this containerd running
    // for it". The foreign listener stays: containerd keeps its connection to it (measured: still open 10 s later),
    // and closing it makes containerd clean up as after a dead shim, which removes the bundle (2 runs in 3).
    for (let i = 0; i < 150 && (await c.shimRuns('f2')).length > 0; i++) await sleep(100);
    assert.deepEqual(await c.shimRuns('f2'), [], 'no shim run for f2 any more');
    assert.ok(existsSync(bundle), 'the failed create left its bundle');
    // The operator's moment: 2 s after the error (the old rule hid the bundle for 30 s).
    while (Date.now() - failedAt < 2000) await sleep(100);
    const d = await doctor({ minBundleAgeMs: undefined, createdThresholdMs: undefined });
    const leaked = find(d.before.findings, 'leaked-bundle', 'f2');
    assert.ok(leaked, d.output);
    assert.equal(leaked.evidence.dir, bundle);
    assert.ok(typeof leaked.evidence.ageSeconds === 'number' && leaked.evidence.ageSeconds < 30, JSON.stringify(leaked.evidence));
    assert.equal(d.exitCode, 3);
    await listener.close();
    await fixUntilGone('f2');
    await startAgain('f2');
    await assertHealthyUntouched();
  });

  test('foreign listener on a shim socket path → failed create leaves a bundle; fix removes it once the listener is gone', async () => {
    const { path, close } = await foreignListener('f1');
    const created = await c.ctr(['run', '-d', '--null-io', IMAGE, 'f1', 'sleep', '100000'], { timeoutMs: 15_000 });
    assert.notEqual(created.code, 0, 'ctr run must fail while a foreign process holds the socket');
    assert.ok(existsSync(c.bundleDir('f1')), `the failed create leaves its bundle (${created.stderr})`);
    // containerd's clean-up of the failed create (`shim delete`) may still run: while it does, a create (or its
    // clean-up) is in flight for f1 and the doctor rightly leaves the bundle alone. The state under test comes after.
    for (let i = 0; i < 100 && (await c.shimRuns('f1')).length > 0; i++) await sleep(100);
    assert.deepEqual(await c.shimRuns('f1'), [], 'no shim run for f1 any more');

    const d = await doctor();
    assert.equal(d.exitCode, 3);
    const foreign = find(d.before.findings, 'foreign-listener', 'f1');
    assert.ok(foreign, d.output);
    assert.equal(foreign.severity, 'critical');
    assert.equal(foreign.evidence.path, path);
    assert.ok((foreign.evidence.owners as string[]).some((o) => o.startsWith(`${process.pid} `)), 'names this test process as the holder');
    const leaked = find(d.before.findings, 'leaked-bundle', 'f1');
    assert.ok(leaked, d.output);
    assert.equal(leaked.evidence.containerExists, true);
    assert.equal(leaked.evidence.dir, c.bundleDir('f1'));

    // With the foreign listener still there, --fix leaves the bundle alone (something listens on its socket path).
    const held = await doctor({ fix: true, yes: true });
    assert.ok(existsSync(c.bundleDir('f1')), held.output);
    assert.equal(held.results.find((r) => r.action.kind === 'remove-bundle')?.outcome ?? 'skipped', 'skipped', held.output);

    // The doctor never kills a foreign process; the operator does. containerd then loses its connection to it and
    // cleans up as after a dead shim, which may remove the bundle itself (it did 2 runs in 3 here); --fix removes
    // what is left.
    await close();
    const audit = join(c.dir, 'audit-f1.jsonl');
    await fixUntilGone('f1', audit);
    const lines = (await readFile(audit, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { event: string; kind?: string; outcome?: string });
    assert.equal(lines[0]?.event, 'diagnosis');
    assert.equal(lines.at(-1)?.event, 'after');
    await startAgain('f1');
    await assertHealthyUntouched();
  });

  test('SIGKILLed shim leaves a stale socket; fix removes it', async () => {
    await c.runContainer('k1');
    const shim = await c.shimPid('k1');
    assert.ok(shim);
    process.kill(shim, 'SIGKILL');
    // containerd notices the dead shim and cleans the task and bundle, but never the socket (containerd#11292).
    for (let i = 0; i < 50 && (await c.taskStatus('k1')) !== undefined; i++) await new Promise((r) => setTimeout(r, 100));
    const d = await doctor();
    const stale = find(d.before.findings, 'stale-socket', 'k1');
    assert.ok(stale, d.output);
    assert.equal(stale.evidence.path, c.shimSocket('k1'));
    assert.equal(stale.evidence.listening, false);
    const fixed = await doctor({ fix: true, yes: true });
    assert.equal(fixed.results.find((r) => r.action.kind === 'remove-socket' && r.action.containerId === 'k1')?.outcome, 'done', fixed.output);
    assert.equal(existsSync(c.shimSocket('k1')), false);
    await startAgain('k1');
    await assertHealthyUntouched();
  });

  test('stale socket file at an existing container\'s path is found and removed, never one with a listener', async () => {
    const created = await c.ctr(['container', 'create', IMAGE, 's1', 'sleep', '100000']);
    assert.equal(created.code, 0, created.stderr);
    await plantStaleSocket(c.shimSocket('s1'));
    const d = await doctor();
    assert.ok(find(d.before.findings, 'stale-socket', 's1'), d.output);
    // The healthy container's live socket is never called stale.
    assert.equal(find(d.before.findings, 'stale-socket', 'healthy'), undefined);
    const fixed = await doctor({ fix: true, yes: true });
    assert.equal(fixed.results.find((r) => r.action.containerId === 's1')?.outcome, 'done', fixed.output);
    assert.equal(fixed.results.some((r) => r.action.containerId === 'healthy'), false, 'no action ever targets the healthy container');
    await startAgain('s1');
    await assertHealthyUntouched();
  });

  test('containerd killed -9, bundle removed by hand, containerd restarted → orphaned shim; fix stops it and cleans runc state', async () => {
    await c.runContainer('o1');
    const shim = await c.shimPid('o1');
    assert.ok(shim);
    await c.kill9();
    await run('umount', [join(c.bundleDir('o1'), 'rootfs')]);
    await rm(c.bundleDir('o1'), { recursive: true });
    await c.restart();
    const d = await doctor();
    const orphan = find(d.before.findings, 'orphaned-shim', 'o1');
    assert.ok(orphan, d.output);
    assert.equal(orphan.evidence.pid, shim);
    assert.equal(orphan.evidence.reason, 'task-gone');
    // (The orphan blocks a new task of the same id — see shared/notes — but probing that with `ctr task start`
    // here sometimes left a second shim and a fresh bundle behind in a fresh-clone CI run, changing the state under
    // test; startAgain() below proves the repair instead.)
    const fixed = await doctor({ fix: true, yes: true });
    assert.equal(fixed.results.find((r) => r.action.kind === 'stop-shim')?.outcome, 'done', fixed.output);
    assert.equal(fixed.exitCode, 0, fixed.output);
    assert.equal(await c.shimPid('o1'), undefined);
    await startAgain('o1');
    await assertHealthyUntouched();
  });

  test('containerd killed -9 and a shim SIGKILLed while it was down → after restart only the stale socket is left', async () => {
    await c.runContainer('r1');
    const shim = await c.shimPid('r1');
    assert.ok(shim);
    await c.kill9();
    process.kill(shim, 'SIGKILL');
    await c.restart();
    for (let i = 0; i < 50 && (await c.taskStatus('r1')) !== undefined; i++) await new Promise((r) => setTimeout(r, 100));
    const d = await doctor();
    assert.ok(find(d.before.findings, 'stale-socket', 'r1'), d.output);
    const fixed = await doctor({ fix: true, yes: true });
    assert.equal(fixed.exitCode, 0, fixed.output);
    await startAgain('r1');
    await assertHealthyUntouched();
  });

  test('hung shim (SIGSTOP) → task-unknown, reported for a person, never acted on', async () => {
    await c.runContainer('h1');
    const shim = await c.shimPid('h1');
    assert.ok(shim);
    process.kill(shim, 'SIGSTOP');
    try {
      // The stop takes effect when the shim next runs: on a loaded machine that can be a while, and a doctor that
      // looks before then sees a sleeping shim, not a hung one.
      for (let i = 0; i < 100 && !/\) T /.test(await readFile(`/proc/${shim}/stat`, 'utf8')); i++) await sleep(50);
      const d = await doctor({ fix: true, yes: true, timeoutMs: 8000 });
      const f = find(d.before.findings, 'task-unknown', 'h1');
      assert.ok(f, d.output);
      assert.ok((f.evidence.shims as string[]).some((s) => s.startsWith(`${shim} `) && s.endsWith('state=T')), JSON.stringify(f.evidence));
      assert.equal(d.results.some((r) => r.action.containerId === 'h1'), false);
    } finally {
      process.kill(shim, 'SIGCONT');
    }
    assert.equal(await c.taskStatus('h1'), 'RUNNING');
    await assertHealthyUntouched();
  });

  test('containerd gone: exit 1, containerd-unreachable, its shims reported but never stopped', async () => {
    await c.kill9();
    try {
      const d = await doctor({ fix: true, yes: true });
      assert.equal(d.exitCode, 1);
      assert.ok(d.before.findings.some((f) => f.code === 'containerd-unreachable'));
      const orphan = find(d.before.findings, 'orphaned-shim', 'healthy');
      assert.equal(orphan?.evidence.reason, 'containerd-gone');
      assert.deepEqual(d.results, [], 'nothing is done while containerd cannot be asked');
    } finally {
      await c.restart();
    }
    await assertHealthyUntouched();
    const again = await doctor();
    assert.equal(again.exitCode, 0, again.output);
  });

  test('a containerd socket that does not exist: exit 1 quickly', async () => {
    const started = Date.now();
    const r = await runDoctor({ address: join(c.dir, 'nope.sock'), stateDir: join(c.dir, 'nostate'), logs: false, write: () => undefined });
    assert.equal(r.exitCode, 1);
    assert.equal(r.before.findings[0]?.code, 'containerd-unreachable');
    assert.ok(Date.now() - started < 5000);
  });
});
