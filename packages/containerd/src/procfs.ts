// What `ps`, `ss -lpn` and `findmnt` show, read straight from /proc so the doctor needs no tools and can run in a
// minimal image. /proc changes while we read it: a process may exit between readdir and open (ENOENT, ESRCH), a
// non-root reader may be refused (EACCES, EPERM), and a test may hand us a fake tree with junk in it. None of that is
// an error here: each unreadable entry becomes a "blind spot" the report names, and the scan goes on.
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { readFile, readlink } from 'node:fs/promises';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { join } from 'node:path';
import { throwIfAborted } from '@transship/core/errors';

export interface BlindSpot {
  /** What could not be seen, e.g. `/proc/123/fd`. */
  what: string;
  /** errno code or a short reason. */
  reason: string;
}

export interface ProcInfo {
  pid: number;
  ppid: number;
  /** One-letter state from /proc/<pid>/stat; `Z` (zombie) and `X` (dead) count as gone. */
  state: string;
  /** Start time in clock ticks since boot: with the pid, it identifies a process across pid reuse. */
  startTime: number;
  argv: string[];
}

export interface ProcOptions {
  /** Root of the proc tree; tests pass a fixture directory. */
  procRoot?: string;
  signal?: AbortSignal | undefined;
}

const PARALLEL = 64;
// /proc reads are memory copies in the kernel (microseconds): done synchronously in chunks of CHUNK pids, yielding to
// the event loop between chunks so gRPC replies are still serviced. Through the libuv thread pool (4 threads) the
// same reads cost ~2 ms each in queueing — 300 ms for a 500-process node instead of 30.
const CHUNK = 128;

function errCode(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : 'EUNKNOWN';
}

/** Errors that mean "the process went away while we looked": not worth a blind-spot line. */
function vanished(err: unknown): boolean {
  const c = errCode(err);
  return c === 'ENOENT' || c === 'ESRCH';
}

async function mapLimit<T, R>(items: T[], fn: (item: T) => Promise<R>, signal?: AbortSignal): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += PARALLEL) {
    throwIfAborted(signal);
    out.push(...(await Promise.all(items.slice(i, i + PARALLEL).map(fn))));
  }
  return out;
}

/** Parses /proc/<pid>/stat; the command name may hold spaces and parentheses, so fields are split after the last `)`. */
export function parseStat(text: string): { state: string; ppid: number; startTime: number } | undefined {
  const close = text.lastIndexOf(')');
  if (close === -1) return undefined;
  const fields = text.slice(close + 2).trim().split(/\s+/);
  // fields[0] is field 3 (state); starttime is field 22.
  const state = fields[0];
  const ppid = Number(fields[1]);
  const startTime = Number(fields[19]);
  if (!state || !Number.isInteger(ppid) || !Number.isFinite(startTime)) return undefined;
  return { state, ppid, startTime };
}

export function parseCmdline(raw: Buffer | string): string[] {
  const s = typeof raw === 'string' ? raw : raw.toString('utf8');
  const parts = s.split('\0');
  if (parts.length > 0 && parts[parts.length - 1] === '') parts.pop();
  return parts;
}

export async function readProcess(pid: number, opts: ProcOptions = {}): Promise<ProcInfo | undefined> {
  const root = opts.procRoot ?? '/proc';
  const [stat, cmdline] = await Promise.all([readFile(join(root, String(pid), 'stat'), 'utf8'), readFile(join(root, String(pid), 'cmdline'))]);
  const s = parseStat(stat);
  if (!s) return undefined;
  return { pid, ...s, argv: parseCmdline(cmdline) };
}

export function isGone(p: ProcInfo | undefined): boolean {
  return p === undefined || p.state === 'Z' || p.state === 'X';
}

function readProcessSync(root: string, pid: number): ProcInfo | undefined {
  const stat = readFileSync(join(root, String(pid), 'stat'), 'utf8');
  const cmdline = readFileSync(join(root, String(pid), 'cmdline'));
  const s = parseStat(stat);
  return s ? { pid, ...s, argv: parseCmdline(cmdline) } : undefined;
}

export async function listProcesses(opts: ProcOptions = {}): Promise<{ processes: Map<number, ProcInfo>; blind: BlindSpot[] }> {
  const root = opts.procRoot ?? '/proc';
  const blind: BlindSpot[] = [];
  const processes = new Map<number, ProcInfo>();
  let names: string[];
  try {
    names = readdirSync(root);
  } catch (err) {
    blind.push({ what: root, reason: errCode(err) });
    return { processes, blind };
  }
  const pids = names.filter((n) => /^\d+$/.test(n)).map(Number);
  for (let i = 0; i < pids.length; i += CHUNK) {
    throwIfAborted(opts.signal);
    for (const pid of pids.slice(i, i + CHUNK)) {
      try {
        const p = readProcessSync(root, pid);
        if (p) processes.set(pid, p);
        else blind.push({ what: join(root, String(pid), 'stat'), reason: 'unparseable' });
      } catch (err) {
        if (!vanished(err)) blind.push({ what: join(root, String(pid)), reason: errCode(err) });
      }
    }
    await yieldToLoop();
  }
  return { processes, blind };
}

export interface UnixSocketRow {
  inode: number;
  listening: boolean;
  /** Filesystem path, or `@name` for an abstract socket; empty for unnamed sockets. */
  path: string;
}

/** Parses /proc/net/unix (`Num RefCount Protocol Flags Type St Inode Path`); flag 0x10000 is __SO_ACCEPTCON (listening). */
export function parseNetUnix(text: string): UnixSocketRow[] {
  const rows: UnixSocketRow[] = [];
  const lines = text.split('\n');
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (!line) continue;
    const cols = line.trim().split(/\s+/);
    if (cols.length < 7) continue;
    const flags = parseInt(cols[3] ?? '', 16);
    const inode = Number(cols[6]);
    if (!Number.isFinite(flags) || !Number.isInteger(inode)) continue;
    // The path is the rest of the line (it may contain spaces).
    const path = cols.length > 7 ? line.trim().split(/\s+/).slice(7).join(' ') : '';
    rows.push({ inode, listening: (flags & 0x10000) !== 0, path });
  }
  return rows;
}

export async function readUnixSockets(opts: ProcOptions & { pid?: number | 'self' } = {}): Promise<{ rows: UnixSocketRow[]; blind: BlindSpot[] }> {
  const root = opts.procRoot ?? '/proc';
  const file = join(root, String(opts.pid ?? 'self'), 'net', 'unix');
  try {
    return { rows: parseNetUnix(await readFile(file, 'utf8')), blind: [] };
  } catch (err) {
    return { rows: [], blind: [{ what: file, reason: errCode(err) }] };
  }
}

/** Listening unix sockets by path (several rows may share a path: a stale bind plus a live one). */
export function listenersByPath(rows: UnixSocketRow[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const r of rows) {
    if (!r.listening || r.path === '') continue;
    const list = out.get(r.path);
    if (list) list.push(r.inode);
    else out.set(r.path, [r.inode]);
  }
  return out;
}

/**
 * Which of `pids` hold which socket inodes (the `users:(("x",pid=…))` column of `ss -p`): reads the fd links of
 * those pids only. Callers ask for the likely holders first (shims) and widen to every pid only when an inode is
 * still unowned, because reading every fd of every process is the expensive part on a busy node.
 */
export async function socketOwners(pids: number[], inodes: Set<number>, opts: ProcOptions = {}): Promise<{ owners: Map<number, number[]>; blind: BlindSpot[] }> {
  const root = opts.procRoot ?? '/proc';
  const owners = new Map<number, number[]>();
  const blind: BlindSpot[] = [];
  if (inodes.size === 0) return { owners, blind };
  for (let i = 0; i < pids.length; i += CHUNK) {
    throwIfAborted(opts.signal);
    for (const pid of pids.slice(i, i + CHUNK)) {
      const fdDir = join(root, String(pid), 'fd');
      let fds: string[];
      try {
        fds = readdirSync(fdDir);
      } catch (err) {
        if (!vanished(err)) blind.push({ what: fdDir, reason: errCode(err) });
        continue;
      }
      for (const fd of fds) {
        let target: string;
        try {
          target = readlinkSync(join(fdDir, fd));
        } catch {
          continue; // fd closed while we looked
        }
        if (!target.startsWith('socket:[')) continue;
        const inode = Number(target.slice(8, -1));
        if (!inodes.has(inode)) continue;
        const list = owners.get(inode);
        if (list) {
          if (!list.includes(pid)) list.push(pid);
        } else owners.set(inode, [pid]);
      }
    }
    await yieldToLoop();
  }
  return { owners, blind };
}

export interface Mount {
  id: number;
  parent: number;
  mountPoint: string;
  fsType: string;
  source: string;
}

/** mountinfo escapes space, tab, newline and backslash as octal (`\040`). */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountinfo(text: string): Mount[] {
  const out: Mount[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const sep = line.indexOf(' - ');
    if (sep === -1) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const mountPoint = left[4];
    if (mountPoint === undefined) continue;
    out.push({ id: Number(left[0]), parent: Number(left[1]), mountPoint: unescapeMount(mountPoint), fsType: right[0] ?? '', source: unescapeMount(right[1] ?? '') });
  }
  return out;
}

export async function readMounts(opts: ProcOptions & { pid?: number | 'self' } = {}): Promise<{ mounts: Mount[]; blind: BlindSpot[] }> {
  const file = join(opts.procRoot ?? '/proc', String(opts.pid ?? 'self'), 'mountinfo');
  try {
    return { mounts: parseMountinfo(await readFile(file, 'utf8')), blind: [] };
  } catch (err) {
    return { mounts: [], blind: [{ what: file, reason: errCode(err) }] };
  }
}

/** Pids whose cwd or root directory lies at or under `dir` (who would keep a bundle busy). */
export async function processesUsingDir(dir: string, pids: number[], opts: ProcOptions = {}): Promise<{ users: number[]; blind: BlindSpot[] }> {
  const root = opts.procRoot ?? '/proc';
  const users: number[] = [];
  const blind: BlindSpot[] = [];
  const inside = (p: string): boolean => p === dir || p.startsWith(dir + '/');
  await mapLimit(
    pids,
    async (pid) => {
      for (const link of ['cwd', 'root']) {
        try {
          const target = await readlink(join(root, String(pid), link));
          if (inside(target.replace(/ \(deleted\)$/, ''))) {
            users.push(pid);
            return;
          }
        } catch (err) {
          if (!vanished(err)) blind.push({ what: join(root, String(pid), link), reason: errCode(err) });
        }
      }
    },
    opts.signal,
  );
  return { users, blind };
}
