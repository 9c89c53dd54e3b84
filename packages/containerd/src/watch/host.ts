// What the host shows about one task, read at the moments the watcher needs it: when a task is created (which shim
// serves it, on which socket, is the socket listening, where its cgroup is) and after it is deleted (is each of
// those really gone). Reads are targeted — a handful of files per task, never a walk of /proc — so following a node
// that starts containers at full speed stays cheap. The doctor's readers and parsers are reused; nothing here
// trusts the state dir more than the doctor does (no symlink is followed, files are size-capped).
import { closeSync, constants, fstatSync, lstatSync, openSync, readFileSync, readSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { TASK_DIR } from '../bundles.js';
import { withoutStackTraces } from '@transship/core/errors';
import { CgroupLayout, specFacts } from '../cgroups.js';
import type { GatherOptions } from '../gather.js';
import { parseCmdline, parseMountinfo, parseNetUnix, parseStat } from '../procfs.js';
import { DEFAULT_RUNC_ROOT } from '../runc-state.js';
import { SHIM_SOCKET_DIR, isShimOf, parseShimAddress, shimSocketPath, socketPath } from '../shim-socket.js';

export type HostOptions = Pick<GatherOptions, 'address' | 'stateDir' | 'socketDir' | 'procRoot' | 'cgroupRoot' | 'runcRoot'>;

export interface ShimRef {
  pid: number;
  /** Clock ticks since boot, from /proc/<pid>/stat: with the pid it survives pid reuse. */
  startTime: number;
}

/** What the host said about a task right after containerd reported it created. */
export interface TaskHostInfo {
  bundle: string;
  /** When containerd wrote the bundle's config.json: the start of the task create (before the shim was launched). */
  bundleWrittenAt?: number | undefined;
  /** The id the shim is keyed by (the pod sandbox for Kubernetes containers). */
  groupId: string;
  socket: string;
  socketListening: boolean;
  shim?: ShimRef | undefined;
  /** Absolute cgroup directories of the container (one per v1 controller, one on v2). */
  cgroupDirs: string[];
  runcStateDir: string;
}

export type Liveness = 'alive' | 'zombie' | 'gone';

/** What a post-delete check found; `true` = released. */
export interface ReleaseReport {
  shimExited: boolean | undefined;
  socketRemoved: boolean | undefined;
  socketListening: boolean;
  bundleRemoved: boolean;
  rootfsMounts: string[];
  cgroupsRemoved: boolean;
  cgroupLeft: string[];
  cgroupPids: number[];
  runcStateRemoved: boolean;
}

export interface ReleaseTarget {
  namespace: string;
  id: string;
  info: TaskHostInfo;
  /** Other tasks of the same shim group still exist: the shim and its socket are supposed to live on. */
  groupStillServing: boolean;
}

export interface HostProbe {
  /**
   * `publishedAt`: containerd's timestamp of the /tasks/create event. A socket-table read taken after it answers for
   * every task created before it, so the tasks created in one batch of events share one read.
   */
  taskCreated(namespace: string, id: string, initPid: number, bundle: string, publishedAt?: number): TaskHostInfo;
  /** The serving shim of (ns, group) if one lives now (a deterministic search, see LinuxHost.shimOf). */
  findShim(namespace: string, groupId: string, initPid: number): ShimRef | undefined;
  /** Whether something listens on a unix socket path now. */
  listening(path: string): boolean;
  liveness(pid: number, startTime?: number): Liveness;
  released(target: ReleaseTarget): ReleaseReport;
  /** Whether a path (a shim socket) exists: a shim that exits cleanly unlinks its socket, a killed one cannot. */
  exists(path: string): boolean;
  /** Where a task's resources would be when its create was never inspected (adopted after the fact). */
  fallbackInfo(namespace: string, id: string): TaskHostInfo;
}

/**
 * Opens a file that is often missing (a gone process's /proc entry, a bundle removed by a fast lifecycle), or returns
 * undefined. The error node throws for a miss is built without a stack trace: capturing it was most of what a miss
 * cost (V8 walks the stack for every Error), and misses are the common answer while looking for a shim.
 */
function tryOpen(path: string, flags: number): number | undefined {
  try {
    return withoutStackTraces(() => openSync(path, flags));
  } catch {
    return undefined;
  }
}

/** A small regular file's text and mtime with one open (no symlink followed, size-capped), or undefined. */
function readWithMtime(path: string, max: number): { text: string; mtimeMs: number } | undefined {
  // gone (a fast lifecycle, or the watcher lagging), a symlink, or unreadable
  const fd = tryOpen(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  if (fd === undefined) return undefined;
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.size > max) return undefined;
    const buf = Buffer.allocUnsafe(st.size + 1);
    const n = readSync(fd, buf, 0, buf.length, 0);
    if (n > max) return undefined;
    return { text: buf.toString('utf8', 0, n), mtimeMs: st.mtimeMs };
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/**
 * Whether /proc/net/unix (its text) has a listening row for `path`: only the rows naming the path are parsed (the
 * table holds every unix socket of the network namespace; parsing all of it for one path was most of a task create's
 * cost on a node with many sockets).
 */
export function listeningIn(text: string, path: string): boolean {
  const needle = ` ${path}\n`;
  const header = text.slice(0, text.indexOf('\n') + 1);
  for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + 1)) {
    const start = text.lastIndexOf('\n', at) + 1;
    if (parseNetUnix(header + text.slice(start, at + needle.length)).some((r) => r.listening && r.path === path)) return true;
  }
  // the last line of the table may lack its newline
  if (text.endsWith(` ${path}`)) {
    const start = text.lastIndexOf('\n', text.length - path.length - 2) + 1;
    return parseNetUnix(header + text.slice(start)).some((r) => r.listening && r.path === path);
  }
  return false;
}

const procBuf = Buffer.allocUnsafe(8192);
/** How far below a gone init's pid its shim may be among the shims' parent's children (processes only, no threads). */
const SHIM_CHILD_RANGE = 4096;

/**
 * A small /proc file in one read (open, read, close), or undefined when it cannot be opened (the process is gone):
 * readFileSync's fstat and second read to find the end are two more syscalls per file, and on a VM every syscall
 * counts. Files longer than the buffer fall back to readFileSync.
 */
function readProc(path: string): Buffer | undefined {
  const fd = tryOpen(path, constants.O_RDONLY);
  if (fd === undefined) return undefined;
  let n: number;
  try {
    n = readSync(fd, procBuf, 0, procBuf.length, null);
  } catch {
    return undefined; // exited between the open and the read
  } finally {
    closeSync(fd);
  }
  return n < procBuf.length ? Buffer.from(procBuf.subarray(0, n)) : readFileSync(path);
}

/**
 * Whether /proc/<pid> may be a shim, by its executable (one readlink, no open/read/close of its command line): false
 * for a gone pid and for any other program. Unreadable (no ptrace access here) says "maybe": the command line decides.
 */
function mayBeShim(procDir: string): boolean {
  try {
    const exe = withoutStackTraces(() => readlinkSync(join(procDir, 'exe')));
    return exe.slice(exe.lastIndexOf('/') + 1).startsWith('containerd-shim');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

function exists(path: string): boolean {
  // throwIfNoEntry: an ENOENT exception costs more CPU than the lstat itself, and "gone" is the common answer.
  return lstatSync(path, { throwIfNoEntry: false }) !== undefined;
}

export class LinuxHost implements HostProbe {
  readonly address: string;
  private readonly socketDir: string;
  private readonly procRoot: string;
  private readonly cgroupRoot: string;
  private readonly runcRoot: string;
  private readonly stateDir: string;
  private readonly cgroups: CgroupLayout;

  constructor(opts: HostOptions) {
    this.address = socketPath(opts.address);
    this.stateDir = opts.stateDir;
    this.socketDir = opts.socketDir ?? SHIM_SOCKET_DIR;
    this.procRoot = opts.procRoot ?? '/proc';
    this.cgroupRoot = opts.cgroupRoot ?? '/sys/fs/cgroup';
    this.runcRoot = opts.runcRoot ?? DEFAULT_RUNC_ROOT;
    this.cgroups = new CgroupLayout(this.cgroupRoot);
  }

  private stat(pid: number): { state: string; ppid: number; startTime: number } | undefined {
    const raw = readProc(join(this.procRoot, String(pid), 'stat'));
    return raw === undefined ? undefined : parseStat(raw.toString('utf8'));
  }

  exists(path: string): boolean {
    return exists(path);
  }

  liveness(pid: number, startTime?: number): Liveness {
    const s = this.stat(pid);
    if (!s || (startTime !== undefined && s.startTime !== startTime)) return 'gone';
    return s.state === 'Z' || s.state === 'X' ? 'zombie' : 'alive';
  }

  /** The shim at `pid`, if its command line says it serves (ns, group) of our containerd. */
  private shimAt(pid: number, namespace: string, groupId: string): ShimRef | undefined {
    const raw = readProc(join(this.procRoot, String(pid), 'cmdline'));
    if (raw === undefined) return undefined; // no such process
    if (!isShimOf(parseCmdline(raw), this.address, namespace, groupId)) return undefined;
    const shim = this.stat(pid);
    if (!shim) return undefined;
    this.shimParent = shim.ppid;
    return { pid, startTime: shim.startTime };
  }

  /**
   * The shim serving (ns, group), found by what identifies it, never by a guess: the parent of the task's live init
   * (the shim is runc's child subreaper), else the shim whose command line names our containerd, namespace and group
   * — first among the children of the shims' parent (one file read), then in all of /proc (one readlink of each
   * process's executable; command lines are read only for shims). The old look-back over the 64 pids below the init
   * found nothing whenever other processes (an exec, a busy node) took those pids, and the watcher read the create
   * too late to see the init (issue 20 item 17). `shimMayLive` false (its socket was not listening, or the bundle is
   * gone: the shim was shut down) skips the search: nothing found then could be it.
   */
  private shimOf(initPid: number, namespace: string, groupId: string, shimMayLive: boolean): ShimRef | undefined {
    const init = initPid > 0 ? this.stat(initPid) : undefined;
    const parent = init ? this.shimAt(init.ppid, namespace, groupId) : undefined;
    if (parent || !shimMayLive) return parent;
    return (initPid > 0 ? this.shimAmongChildren(initPid, namespace, groupId) : undefined) ?? this.scanForShim(namespace, groupId);
  }

  /** Every serving shim process of (ns, group) of our containerd, by its command line (a walk of /proc). */
  private scanForShim(namespace: string, groupId: string): ShimRef | undefined {
    let names: string[];
    try {
      names = readdirSync(this.procRoot);
    } catch {
      return undefined;
    }
    for (const name of names) {
      if (name.charCodeAt(0) < 48 || name.charCodeAt(0) > 57) continue; // not a pid
      const dir = join(this.procRoot, name);
      if (!mayBeShim(dir)) continue;
      const shim = this.shimAt(Number(name), namespace, groupId);
      if (shim) return shim;
    }
    return undefined;
  }

  findShim(namespace: string, groupId: string, initPid: number): ShimRef | undefined {
    return this.shimOf(initPid, namespace, groupId, true);
  }

  /**
   * Who adopts the shims: a shim daemonizes, so its parent is pid 1 or the nearest child subreaper (the same for every
   * shim of this containerd), learned from the shims found through a live init.
   */
  private shimParent: number | undefined;

  /**
   * The shim of a task whose init is gone, among the children of the shims' parent (one read of its `children` file
   * instead of walking the pids below the init, threads included, one lstat each): the closest few below the init's
   * pid are checked by their command line (exited shims not reaped yet are children too, with an empty one).
   * Undefined when not found or not possible here (no parent learned yet, or no `children` file: a kernel without
   * CONFIG_PROC_CHILDREN).
   */
  private shimAmongChildren(initPid: number, namespace: string, groupId: string): ShimRef | undefined {
    const parent = this.shimParent;
    if (parent === undefined) return undefined;
    const raw = readProc(join(this.procRoot, String(parent), 'task', String(parent), 'children'));
    if (raw === undefined) return undefined;
    const below: number[] = [];
    for (const p of raw.toString('latin1').split(' ')) {
      const pid = Number(p);
      if (pid > 0 && pid < initPid && pid >= initPid - SHIM_CHILD_RANGE) below.push(pid);
    }
    below.sort((a, b) => b - a);
    for (const pid of below.slice(0, 16)) {
      const shim = this.shimAt(pid, namespace, groupId);
      if (shim) return shim;
    }
    return undefined;
  }

  /** The last /proc/net/unix read and when it was taken (wall clock, as containerd's event timestamps). */
  private socketTable: { text: string; takenAt: number } | undefined;

  listening(path: string, publishedAt?: number): boolean {
    try {
      let table = this.socketTable;
      if (!table || publishedAt === undefined || table.takenAt < publishedAt) {
        table = { text: readFileSync(join(this.procRoot, 'self', 'net', 'unix'), 'utf8'), takenAt: Date.now() };
        this.socketTable = publishedAt === undefined ? undefined : table;
      }
      return listeningIn(table.text, path);
    } catch {
      return false;
    }
  }

  taskCreated(namespace: string, id: string, initPid: number, bundle: string, publishedAt?: number): TaskHostInfo {
    // config.json is written first, before the shim starts: its mtime is when the task create began. One open gives
    // both (a file already deleted — a fast lifecycle, or the watcher lagging — gives neither).
    const spec = readWithMtime(join(bundle, 'config.json'), 4 * 1024 * 1024);
    const bundleWrittenAt = spec?.mtimeMs;
    const { groupId, cgroupRel } = specFacts(namespace, id, spec?.text);
    // The shim writes its address into the bundle (1.x); trust it only when it parses as a path in the socket dir.
    const addr = readWithMtime(join(bundle, 'address'), 4096);
    const parsed = addr !== undefined ? parseShimAddress(addr.text) : undefined;
    const socket = parsed?.kind === 'path' && parsed.path.startsWith(this.socketDir + '/') ? parsed.path : shimSocketPath(this.address, namespace, groupId, this.socketDir);
    const cgroupDirs = this.cgroupDirs(cgroupRel);
    const socketListening = this.listening(socket, publishedAt);
    // Both files unreadable: the bundle is gone, which containerd does only after the shim's shutdown.
    const bundleGone = spec === undefined && addr === undefined;
    return {
      bundle,
      bundleWrittenAt,
      groupId,
      socket,
      socketListening,
      shim: initPid > 0 ? this.shimOf(initPid, namespace, groupId, socketListening && !bundleGone) : undefined,
      cgroupDirs,
      runcStateDir: join(this.runcRoot, namespace, id),
    };
  }

  private cgroupDirs(rel: string): string[] {
    return this.cgroups.dirs(rel);
  }

  fallbackInfo(namespace: string, id: string): TaskHostInfo {
    return {
      bundle: join(this.stateDir, TASK_DIR, namespace, id),
      groupId: id,
      socket: shimSocketPath(this.address, namespace, id, this.socketDir),
      socketListening: false,
      cgroupDirs: this.cgroupDirs(join('/', namespace, id)),
      runcStateDir: join(this.runcRoot, namespace, id),
    };
  }

  released(t: ReleaseTarget): ReleaseReport {
    const info = t.info;
    const checkShim = !t.groupStillServing;
    const shimExited = checkShim && info.shim ? this.liveness(info.shim.pid, info.shim.startTime) !== 'alive' : undefined;
    const socketPresent = checkShim ? exists(info.socket) : undefined;
    const socketListening = socketPresent === true && this.listening(info.socket);
    const bundleRemoved = !exists(info.bundle);
    // A mount point keeps its directory alive (rmdir fails with EBUSY), so mountinfo is read only when the bundle is
    // still there: the common, clean case costs no mountinfo read.
    let rootfsMounts: string[] = [];
    if (!bundleRemoved) {
      try {
        rootfsMounts = parseMountinfo(readFileSync(join(this.procRoot, 'self', 'mountinfo'), 'utf8'))
          .map((m) => m.mountPoint)
          .filter((p) => p === info.bundle || p.startsWith(info.bundle + '/'));
      } catch {
        rootfsMounts = [];
      }
    }
    const cgroupLeft = info.cgroupDirs.filter(exists);
    const cgroupPids = new Set<number>();
    for (const dir of cgroupLeft) {
      try {
        for (const l of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n')) if (/^\d+$/.test(l)) cgroupPids.add(Number(l));
      } catch {
        // removed between the two reads: released after all
      }
    }
    return {
      shimExited,
      socketRemoved: socketPresent === undefined ? undefined : !socketPresent,
      socketListening,
      bundleRemoved,
      rootfsMounts,
      cgroupsRemoved: cgroupLeft.length === 0,
      cgroupLeft,
      cgroupPids: [...cgroupPids],
      runcStateRemoved: !exists(info.runcStateDir),
    };
  }
}
