// Hostile and corner inputs for the doctor, on fixture directories: unreadable /proc entries, sockets that vanish
// mid-scan, bundles with garbage files, symlinks out of the state dir, and the correlation rules that the real
// containerd 1.6 cannot reproduce on demand (a task whose shim is dead: 1.6 cleans it up within milliseconds).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, mkdir, writeFile, symlink, rm, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseStat, parseNetUnix, listProcesses, socketOwners, parseMountinfo } from '@transship/containerd/procfs';
import { scanBundles } from '@transship/containerd/bundles';
import { parseShimAddress, parseShimArgv, shimSocketPath, shimGroupId } from '@transship/containerd/shim-socket';
import { correlate, DEFAULT_DIAGNOSE } from '@transship/containerd/diagnose';
import type { Snapshot } from '@transship/containerd/gather';
import { plan, execute, type Action } from '@transship/containerd/repair';
import { ContainerdClient } from '@transship/containerd/client';
import { parseDuration } from '@transship/core/duration';
import { isServingShim } from '@transship/containerd/shim-socket';
import { ACTIONS } from '@transship/containerd/repair';
import { FINDING_CODES } from '@transship/containerd/findings';
import { withFindingsTable } from '@transship/containerd/doctor-docs';
import { parseRuncState } from '@transship/containerd/runc-state';

async function tmp(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'ts-doctor-unit-'));
}

test('shim socket name is sha256(join(address, ns, id)) (verified against a live shim in the notes)', () => {
  // The value the notes record for sha256("/tmp/x/containerd.sock/default/c1").
  const p = shimSocketPath('/tmp/x/containerd.sock', 'default', 'c1');
  assert.equal(p, `/run/containerd/s/${execFileSync('sha256sum', { input: '/tmp/x/containerd.sock/default/c1' }).toString().split(' ')[0]}`);
  assert.equal(shimGroupId('c1', { 'io.kubernetes.cri.sandbox-id': 'pod1' }), 'pod1');
  assert.equal(shimGroupId('c1', { unrelated: 'x' }), 'c1');
});

test('parsers survive odd but legal input', () => {
  assert.deepEqual(parseStat('42 (a) b (c)) S 7 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0'), { state: 'S', ppid: 7, startTime: 12345 });
  assert.equal(parseStat('garbage'), undefined);
  const rows = parseNetUnix(
    'Num       RefCount Protocol Flags    Type St Inode Path\n' +
      '0000: 00000002 00000000 00010000 0001 01 111 /run/containerd/s/abc\n' +
      '0000: 00000003 00000000 00000000 0001 03 112 /run/containerd/s/abc\n' +
      '0000: 00000002 00000000 00010000 0001 01 113 @/containerd-shim/ns/id.sock@\n' +
      '0000: 00000002 00000000 00010000 0001 01 114 /tmp/with space\n' +
      'short line\n',
  );
  assert.deepEqual(rows.map((r) => [r.inode, r.listening, r.path]), [
    [111, true, '/run/containerd/s/abc'],
    [112, false, '/run/containerd/s/abc'],
    [113, true, '@/containerd-shim/ns/id.sock@'],
    [114, true, '/tmp/with space'],
  ]);
  assert.equal(parseMountinfo('36 35 0:3 / /a\\040b rw - overlay overlay rw\n')[0]?.mountPoint, '/a b');
  assert.deepEqual(parseShimAddress('unix:///run/containerd/s/abc\n'), { kind: 'path', path: '/run/containerd/s/abc' });
  assert.equal(parseShimAddress('unix://@/containerd-shim/x').kind, 'abstract');
  assert.equal(parseShimAddress('unix:///run/../etc/passwd').kind, 'invalid');
  assert.equal(parseShimAddress('\u0000junk\n\n').kind, 'invalid');
  assert.deepEqual(parseShimArgv(['/usr/bin/containerd-shim-runc-v2', '-namespace', 'k8s.io', '-id', 'p1', '-address', '/run/containerd/containerd.sock']), {
    binary: 'containerd-shim-runc-v2',
    namespace: 'k8s.io',
    id: 'p1',
    address: '/run/containerd/containerd.sock',
    action: undefined,
    publishBinary: undefined,
  });
  // containerd's `shim start` run carries the same flags: not the serving shim.
  const start = parseShimArgv(['/usr/bin/containerd-shim-runc-v2', '-namespace', 'k8s.io', '-address', '/a.sock', '-publish-binary', '/usr/bin/containerd', '-id', 'p1', '-debug', 'start']);
  assert.equal(start?.action, 'start');
  assert.equal(start && isServingShim(start), false);
  assert.equal(parseShimArgv(['/usr/bin/sleep', '10']), undefined);
  assert.equal(parseDuration('5m', '--x'), 300_000);
  assert.throws(() => parseDuration('soon', '--x'), { code: 'TS_USAGE' });
});

test('unreadable and vanishing /proc entries become blind spots or are skipped, never errors', async () => {
  const proc = await tmp();
  try {
    const mk = async (pid: number, files: Record<string, string>): Promise<void> => {
      await mkdir(join(proc, String(pid), 'fd'), { recursive: true });
      for (const [k, v] of Object.entries(files)) await writeFile(join(proc, String(pid), k), v);
    };
    await mk(100, { stat: '100 (containerd-shim) S 1 100 100 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0', cmdline: 'containerd-shim-runc-v2\0-namespace\0ns\0-id\0c1\0-address\0/x.sock\0' });
    await symlink('socket:[777]', join(proc, '100', 'fd', '3'));
    await symlink('/dev/null', join(proc, '100', 'fd', '0'));
    // 101: cmdline is a directory (EISDIR): unreadable, reported.
    await mkdir(join(proc, '101', 'cmdline'), { recursive: true });
    await writeFile(join(proc, '101', 'stat'), '101 (x) S 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 0 0');
    // 102: stat is garbage.
    await mk(102, { stat: 'nonsense', cmdline: 'x\0' });
    // 103: exited between readdir and open (no files): silently skipped.
    await mkdir(join(proc, '103'));
    // 104: fd dir is a file.
    await mk(104, { stat: '104 (y) S 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 0 0', cmdline: 'y\0' });
    await rm(join(proc, '104', 'fd'), { recursive: true });
    await writeFile(join(proc, '104', 'fd'), 'not a dir');
    await writeFile(join(proc, 'not-a-pid'), '');

    const { processes, blind } = await listProcesses({ procRoot: proc });
    assert.deepEqual([...processes.keys()].sort(), [100, 104]);
    assert.equal(processes.get(100)?.startTime, 500);
    assert.ok(blind.some((b) => b.what.endsWith('/101') && b.reason === 'EISDIR'));
    assert.ok(blind.some((b) => b.what.endsWith('/102/stat') && b.reason === 'unparseable'));
    assert.ok(!blind.some((b) => b.what.includes('/103')), 'a process that vanished is not a blind spot');

    const owners = await socketOwners([100, 104, 999], new Set([777]), { procRoot: proc });
    assert.deepEqual(owners.owners.get(777), [100]);
    assert.ok(owners.blind.some((b) => b.what.endsWith('/104/fd') && b.reason === 'ENOTDIR'));
  } finally {
    await rm(proc, { recursive: true, force: true });
  }
});

test('bundles with garbage files and symlinks out of the state dir: reported, never followed', async () => {
  const state = await tmp();
  const outside = await tmp();
  try {
    const base = join(state, 'io.containerd.runtime.v2.task');
    const b = join(base, 'ns1', 'garbage');
    await mkdir(join(b, 'rootfs'), { recursive: true });
    await writeFile(join(b, 'address'), '\u0000\u0001binary junk\nsecond line');
    await writeFile(join(b, 'init.pid'), 'not-a-pid');
    await writeFile(join(b, 'bootstrap.json'), '{not json');
    await symlink('/etc/passwd', join(b, 'config.json'));
    const fifo = join(base, 'ns1', 'fifo');
    await mkdir(fifo);
    execFileSync('mkfifo', [join(fifo, 'address')]); // a FIFO would block a naive read forever
    await writeFile(join(fifo, 'init.pid'), 'x'.repeat(200_000));
    const linkAddr = join(base, 'ns1', 'linkaddr');
    await mkdir(linkAddr);
    await writeFile(join(outside, 'secret'), 'unix:///run/containerd/s/stolen');
    await symlink(join(outside, 'secret'), join(linkAddr, 'address'));
    await mkdir(join(outside, 'evil-bundle'));
    await writeFile(join(outside, 'evil-bundle', 'address'), 'unix:///run/containerd/s/evil');
    await symlink(join(outside, 'evil-bundle'), join(base, 'ns1', 'escape'));
    await writeFile(join(base, 'ns1', 'plainfile'), 'x');
    await symlink(outside, join(base, 'ns2'));

    const r = await scanBundles(state);
    const byId = new Map(r.bundles.map((x) => [x.id, x]));
    assert.deepEqual([...byId.keys()].sort(), ['fifo', 'garbage', 'linkaddr']);
    const g = byId.get('garbage');
    assert.equal(g?.address?.kind, 'invalid');
    assert.equal(g?.initPid, undefined);
    assert.ok(g?.problems.some((p) => p.startsWith('init.pid')));
    assert.ok(g?.problems.some((p) => p.startsWith('bootstrap.json')));
    assert.ok(byId.get('fifo')?.problems.some((p) => p === 'address: not a regular file'));
    assert.ok(byId.get('fifo')?.problems.some((p) => p.startsWith('init.pid: larger than')));
    assert.equal(byId.get('linkaddr')?.address, undefined, 'a symlinked address file is not read');
    assert.ok(byId.get('linkaddr')?.problems.includes('address: is a symlink (not followed)'));
    const susp = r.suspicious.map((s) => `${s.namespace}/${s.id ?? ''}:${s.reason.split(' ')[0]}`).sort();
    assert.deepEqual(susp, ['ns1/escape:symlink', 'ns1/plainfile:not', 'ns2/:symlink']);

    // A remove-bundle planned on the symlink is refused by the precondition, and the target outside survives.
    const client = new ContainerdClient({ address: join(state, 'no.sock'), maxAttempts: 1 });
    try {
      const audit: unknown[] = [];
      const action: Action = { kind: 'remove-bundle', namespace: 'ns1', containerId: 'escape', target: join(base, 'ns1', 'escape'), why: 'test', precondition: '' };
      const [res] = await execute([action], { client, address: join(state, 'no.sock'), stateDir: state, socketDir: join(state, 's'), audit: (x) => audit.push(x) });
      assert.equal(res?.outcome, 'skipped');
      assert.equal(res?.error?.code, 'TS_PRECONDITION_CHANGED');
      assert.ok(existsSync(join(outside, 'evil-bundle', 'address')));
      assert.equal(audit.length, 1);
    } finally {
      client.close();
    }
  } finally {
    await rm(state, { recursive: true, force: true });
    await rm(outside, { recursive: true, force: true });
  }
});

test('remove-socket refuses a non-socket, a path outside the socket dir, and a socket that vanished', async () => {
  const dir = await tmp();
  const client = new ContainerdClient({ address: join(dir, 'no.sock'), maxAttempts: 1 });
  try {
    const sdir = join(dir, 's');
    await mkdir(sdir);
    await writeFile(join(sdir, 'regular'), 'x');
    const mk = (target: string): Action => ({ kind: 'remove-socket', namespace: 'n', containerId: 'c', target, why: 't', precondition: '' });
    const results = await execute([mk(join(sdir, 'regular')), mk(join(sdir, 'vanished')), mk('/etc/hostname')], { client, address: join(dir, 'no.sock'), stateDir: dir, socketDir: sdir, audit: () => undefined });
    assert.deepEqual(results.map((r) => r.outcome), ['skipped', 'skipped', 'skipped']);
    assert.ok(existsSync(join(sdir, 'regular')));
    assert.ok(existsSync('/etc/hostname'));
  } finally {
    client.close();
    await rm(dir, { recursive: true, force: true });
  }
});

function snapshot(over: Partial<Snapshot> = {}): Snapshot {
  return {
    takenAt: 1_000_000,
    address: '/run/containerd/containerd.sock',
    stateDir: '/run/containerd',
    socketDir: '/run/containerd/s',
    containerd: { reachable: true, version: '1.6.20', socketListening: true },
    namespaces: ['k8s.io'],
    containers: [],
    tasks: [],
    shims: [],
    otherShims: 0,
    otherShimList: [],
    shimInvocations: [],
    processes: new Map(),
    socketFiles: [],
    listeners: new Map(),
    bundles: [],
    suspicious: [],
    mounts: [],
    cgroups: [],
    runcStates: [],
    runcRoot: '/run/containerd/runc',
    blind: [],
    ...over,
  };
}

test('a task whose shim is dead → task-shim-dead, repaired through the API (delete-task), not by files', () => {
  const snap = snapshot({ tasks: [{ namespace: 'k8s.io', id: 'c1', pid: 4242, status: 'RUNNING', exitStatus: 0 }], containers: [{ namespace: 'k8s.io', id: 'c1', groupId: 'c1', cgroupRel: '/k8s.io/c1', image: 'i', runtime: 'io.containerd.runc.v2', labels: {} }] });
  const findings = correlate(snap, DEFAULT_DIAGNOSE);
  assert.deepEqual(findings.map((f) => f.code), ['task-shim-dead']);
  const actions = plan(findings);
  assert.deepEqual(actions.map((a) => [a.kind, a.containerId]), [['delete-task', 'c1']]);
});

test('pods: containers keyed by their sandbox id share one shim and are not orphaned; sockets of other instances are not judged', () => {
  const addr = '/run/containerd/containerd.sock';
  const podSock = shimSocketPath(addr, 'k8s.io', 'pod1');
  const otherInstanceSock = shimSocketPath('/run/other/containerd.sock', 'k8s.io', 'zzz');
  const snap = snapshot({
    containers: [
      { namespace: 'k8s.io', id: 'pod1', groupId: 'pod1', cgroupRel: '/k8s.io/pod1', image: 'pause', runtime: 'r', labels: {} },
      { namespace: 'k8s.io', id: 'app1', groupId: 'pod1', cgroupRel: '/k8s.io/app1', image: 'app', runtime: 'r', labels: {} },
    ],
    tasks: [
      { namespace: 'k8s.io', id: 'pod1', pid: 10, status: 'RUNNING', exitStatus: 0 },
      { namespace: 'k8s.io', id: 'app1', pid: 11, status: 'RUNNING', exitStatus: 0 },
    ],
    shims: [{ pid: 9, startTime: 1, state: 'S', namespace: 'k8s.io', id: 'pod1', address: addr, children: [10, 11] }],
    processes: new Map([[9, { pid: 9, ppid: 1, state: 'S', startTime: 1, argv: ['containerd-shim-runc-v2'] }]]),
    socketFiles: [
      { path: podSock, isSocket: true },
      { path: otherInstanceSock, isSocket: true },
    ],
    listeners: new Map([[podSock, { inodes: [5], owners: [9] }]]),
  });
  assert.deepEqual(correlate(snap, DEFAULT_DIAGNOSE), []);
});

test('an orphaned shim found while containerd is gone is reported, but nothing is planned against it', () => {
  const snap = snapshot({
    containerd: { reachable: false, socketListening: false, error: { code: 'TS_CONTAINERD_UNREACHABLE', message: 'x' } },
    shims: [{ pid: 9, startTime: 1, state: 'S', namespace: 'k8s.io', id: 'c1', address: '/run/containerd/containerd.sock', children: [] }],
  });
  const findings = correlate(snap, DEFAULT_DIAGNOSE);
  assert.deepEqual(findings.map((f) => f.code).sort(), ['containerd-unreachable', 'orphaned-shim']);
  assert.deepEqual(plan(findings), []);
});

test('a bundle left by a failed create is leaked at once unless something shows a create in flight (issue 16 defect 2)', () => {
  const dir = '/run/containerd/io.containerd.runtime.v2.task/k8s.io/new';
  // Changed 2 s before the diagnosis: reported with the default options (it used to wait until 30 s old).
  const snap = snapshot({ bundles: [{ namespace: 'k8s.io', id: 'new', dir, mtimeMs: 998_000, problems: [] }] });
  const leaked = correlate(snap, DEFAULT_DIAGNOSE);
  assert.deepEqual(leaked.map((f) => f.code), ['leaked-bundle']);
  assert.equal(leaked[0]?.evidence.ageSeconds, 2);
  // Evidence of a create in flight: being written, a `shim start` run, a shim, a listening socket (not a foreign one).
  assert.deepEqual(correlate(snapshot({ bundles: [{ namespace: 'k8s.io', id: 'new', dir, mtimeMs: 999_500, problems: [] }] }), DEFAULT_DIAGNOSE), []);
  assert.deepEqual(correlate({ ...snap, shimInvocations: [{ pid: 5, namespace: 'k8s.io', id: 'new', action: 'start' }] }, DEFAULT_DIAGNOSE), []);
  const shim = { pid: 9, startTime: 1, state: 'S', namespace: 'k8s.io', id: 'new', address: snap.address, children: [] };
  assert.deepEqual(correlate({ ...snap, shims: [shim] }, DEFAULT_DIAGNOSE).map((f) => f.code), ['orphaned-shim'], 'the shim, not the bundle, is what is left');
  const sock = shimSocketPath(snap.address, 'k8s.io', 'new');
  assert.equal(correlate({ ...snap, listeners: new Map([[sock, { inodes: [1], owners: [] }]]) }, DEFAULT_DIAGNOSE).some((f) => f.code === 'leaked-bundle'), false, 'a listener whose owner is not visible may be its shim');
  const foreign = correlate({ ...snap, listeners: new Map([[sock, { inodes: [1], owners: [4242] }]]) }, DEFAULT_DIAGNOSE);
  assert.deepEqual(foreign.map((f) => f.code).sort(), ['foreign-listener', 'leaked-bundle'], 'a foreign listener is no evidence of a create');
});

test('another containerd instance in the same namespace: its runc state and cgroups are never judged; a shared id is an info hazard naming both (issue 16 defect 1)', () => {
  const ours = '/run/containerd/containerd.sock';
  const theirs = '/var/run/docker/containerd/containerd.sock';
  const otherShim = { pid: 70, startTime: 1, state: 'S', namespace: 'k8s.io', id: 'n1', address: theirs, children: [71] };
  const processes = new Map([
    [70, { pid: 70, ppid: 1, state: 'S', startTime: 1, argv: ['containerd-shim-runc-v2', '-namespace', 'k8s.io', '-id', 'n1', '-address', theirs] }],
    [71, { pid: 71, ppid: 70, state: 'S', startTime: 2, argv: ['sleep', '100000'] }],
    [72, { pid: 72, ppid: 71, state: 'S', startTime: 3, argv: ['sh'] }],
    [80, { pid: 80, ppid: 1, state: 'S', startTime: 4, argv: ['sleep', '1'] }],
  ]);
  const base = snapshot({
    address: ours,
    otherShims: 1,
    otherShimList: [otherShim],
    processes,
    runcStates: [
      { namespace: 'k8s.io', id: 'n1', dir: '/run/containerd/runc/k8s.io/n1', initPid: 71, initStart: 2, bundle: '/var/run/docker/containerd/state/io.containerd.runtime.v2.task/k8s.io/n1' },
      // No shim anywhere, but runc says the bundle is under another state dir.
      { namespace: 'k8s.io', id: 'n2', dir: '/run/containerd/runc/k8s.io/n2', initPid: 80, initStart: 4, bundle: '/srv/b/state/io.containerd.runtime.v2.task/k8s.io/n2' },
    ],
    cgroups: [{ namespace: 'k8s.io', id: 'n1', paths: ['/sys/fs/cgroup/k8s.io/n1'], pids: [71, 72] }],
  });
  const healthy = correlate(base, DEFAULT_DIAGNOSE);
  assert.deepEqual(healthy, [], JSON.stringify(healthy));
  // This instance also has a container n1 (no task): the shared runc state and cgroup are a hazard, not a failure.
  const both = correlate({ ...base, containers: [{ namespace: 'k8s.io', id: 'n1', groupId: 'n1', cgroupRel: '/k8s.io/n1', image: 'i', runtime: 'r', labels: {} }] }, DEFAULT_DIAGNOSE);
  assert.deepEqual(both.map((f) => [f.code, f.severity, f.containerId]), [['instance-collision', 'info', 'n1']]);
  assert.equal(both[0]?.evidence.thisInstance, ours);
  assert.equal(both[0]?.evidence.otherInstance, theirs);
  assert.deepEqual(plan(both), [], 'nothing is planned against another instance');
  // Our own leftover in the same place is still judged.
  const own = correlate({ ...base, runcStates: [{ namespace: 'k8s.io', id: 'x1', dir: '/run/containerd/runc/k8s.io/x1', initPid: 999, bundle: '/run/containerd/io.containerd.runtime.v2.task/k8s.io/x1' }] }, DEFAULT_DIAGNOSE);
  assert.deepEqual(own.map((f) => f.code), ['leftover-runc-state']);
});

test('docs/doctor.md holds the findings table rendered from the finding and repair tables (every code, its meaning, its action); missing file fails (issue 14)', async () => {
  const docs = await readFile(new URL('../../docs/doctor.md', import.meta.url), 'utf8');
  assert.equal(docs, withFindingsTable(docs), 'run: node --import tsx src/containerd/doctor-docs.ts docs/doctor.md');
  for (const [code, spec] of Object.entries(FINDING_CODES)) assert.ok(docs.includes(`| \`${code}\` | ${spec.severity} | ${spec.meaning.replace(/\|/g, '\\|')} |`), `docs/doctor.md documents ${code}`);
  for (const row of ACTIONS) assert.ok(docs.includes(`\`${row.kind}\``) && docs.includes(row.precondition), `docs/doctor.md documents ${row.kind}`);
  assert.equal(Object.keys(FINDING_CODES).length, 15);
});

test('young bundles are not called leaked while being written; runc state names its bundle', () => {
  const snap = snapshot({ bundles: [{ namespace: 'k8s.io', id: 'new', dir: '/run/containerd/io.containerd.runtime.v2.task/k8s.io/new', mtimeMs: 999_000, problems: [] }] });
  assert.deepEqual(correlate(snap, { ...DEFAULT_DIAGNOSE, minBundleAgeMs: 30_000 }), []);
  assert.deepEqual(correlate(snap, { ...DEFAULT_DIAGNOSE, minBundleAgeMs: 0 }).map((f) => f.code), ['leaked-bundle']);
  assert.deepEqual(parseRuncState(JSON.stringify({ init_process_pid: 5, init_process_start: 7, config: { labels: ['x=y', 'bundle=/s/io.containerd.runtime.v2.task/ns/c'] } })), { initPid: 5, initStart: 7, bundle: '/s/io.containerd.runtime.v2.task/ns/c' });
});
