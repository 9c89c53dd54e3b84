// Task bundles under `<state>/io.containerd.runtime.v2.task/<ns>/<id>/` (config.json, rootfs/, address, init.pid,
// bootstrap.json on 2.x, work → <root>/…). A bundle left without a task is what makes the next start fail with
// "mkdir …: file exists".
//
// The state dir is ours to read, not to trust: an entry may be a symlink pointing anywhere, a file may be a FIFO
// that would block a read, or hold megabytes of junk. So every directory is lstat'ed and a symlink is reported,
// never followed; files are opened with O_NOFOLLOW|O_NONBLOCK and read up to a small cap.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { throwIfAborted } from '@transship/core/errors';
import type { BlindSpot } from './procfs.js';
import { parseShimAddress, type ParsedAddress } from './shim-socket.js';

export const TASK_DIR = 'io.containerd.runtime.v2.task';
const MAX_FILE = 64 * 1024;

export interface Bundle {
  namespace: string;
  id: string;
  dir: string;
  /** Modification time of the bundle dir: roughly when the task was created. */
  mtimeMs: number;
  address?: ParsedAddress | undefined;
  /** 2.x: bootstrap.json's address, same shape. */
  bootstrap?: ParsedAddress | undefined;
  initPid?: number | undefined;
  /** Where the `work` symlink points (reported, never followed). */
  work?: string | undefined;
  /** Things in the bundle that are not what containerd writes (garbage, wrong types). */
  problems: string[];
}

/** Something in the task dir that is not a bundle directory: a symlink out, a file, an unreadable entry. */
export interface SuspiciousEntry {
  path: string;
  namespace: string;
  id?: string | undefined;
  reason: string;
}

function errCode(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : 'EUNKNOWN';
}

/**
 * Reads a small regular file without following a symlink or blocking on a FIFO; undefined when absent.
 * Synchronous on purpose: state-dir files live on tmpfs (/run), so a read is a memory copy, and the thread-pool
 * round trips of fs/promises (open, fstat, read, close) cost more CPU than the reads (`transship watch` reads bundle
 * files for every task it sees created).
 */
export function readSmallFileSync(path: string, max = MAX_FILE): { text?: string; problem?: string } {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const c = errCode(err);
    if (c === 'ENOENT') return {};
    if (c === 'ELOOP') return { problem: 'is a symlink (not followed)' };
    return { problem: `unreadable (${c})` };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { problem: 'not a regular file' };
    const buf = Buffer.alloc(Math.min(st.size, max) + 1);
    const bytesRead = readSync(fd, buf, 0, buf.length, 0);
    if (bytesRead > max) return { problem: `larger than ${max} bytes` };
    return { text: buf.subarray(0, bytesRead).toString('utf8') };
  } catch (err) {
    return { problem: `unreadable (${errCode(err)})` };
  } finally {
    closeSync(fd);
  }
}

/** The same, for async callers. */
export async function readSmallFile(path: string, max = MAX_FILE): Promise<{ text?: string; problem?: string }> {
  return readSmallFileSync(path, max);
}

export function parseInitPid(text: string): number | undefined {
  const t = text.trim();
  if (!/^\d{1,10}$/.test(t)) return undefined;
  const n = Number(t);
  return n > 0 && n <= 0x3fffffff ? n : undefined;
}

export async function readBundle(namespace: string, id: string, dir: string, mtimeMs: number): Promise<Bundle> {
  const b: Bundle = { namespace, id, dir, mtimeMs, problems: [] };
  const address = await readSmallFile(join(dir, 'address'));
  if (address.problem) b.problems.push(`address: ${address.problem}`);
  if (address.text !== undefined) {
    b.address = parseShimAddress(address.text);
    if (b.address.kind === 'invalid') b.problems.push(`address: ${b.address.reason}`);
  }
  const bootstrap = await readSmallFile(join(dir, 'bootstrap.json'));
  if (bootstrap.problem) b.problems.push(`bootstrap.json: ${bootstrap.problem}`);
  if (bootstrap.text !== undefined) {
    try {
      const parsed: unknown = JSON.parse(bootstrap.text);
      const addr = typeof parsed === 'object' && parsed !== null ? (parsed as { address?: unknown }).address : undefined;
      b.bootstrap = typeof addr === 'string' ? parseShimAddress(addr) : { kind: 'invalid', reason: 'no address field' };
    } catch {
      b.bootstrap = { kind: 'invalid', reason: 'not JSON' };
    }
    if (b.bootstrap.kind === 'invalid') b.problems.push(`bootstrap.json: ${b.bootstrap.reason}`);
  }
  const pid = await readSmallFile(join(dir, 'init.pid'));
  if (pid.problem) b.problems.push(`init.pid: ${pid.problem}`);
  if (pid.text !== undefined) {
    b.initPid = parseInitPid(pid.text);
    if (b.initPid === undefined && pid.text.trim() !== '') b.problems.push('init.pid: not a pid');
  }
  b.work = await readlink(join(dir, 'work')).catch(() => undefined);
  return b;
}

export async function scanBundles(stateDir: string, opts: { namespaces?: Set<string> | undefined; signal?: AbortSignal | undefined } = {}): Promise<{ bundles: Bundle[]; suspicious: SuspiciousEntry[]; blind: BlindSpot[] }> {
  const base = join(stateDir, TASK_DIR);
  const bundles: Bundle[] = [];
  const suspicious: SuspiciousEntry[] = [];
  const blind: BlindSpot[] = [];
  let nsNames: string[];
  try {
    nsNames = await readdir(base);
  } catch (err) {
    if (errCode(err) !== 'ENOENT') blind.push({ what: base, reason: errCode(err) });
    return { bundles, suspicious, blind };
  }
  for (const ns of nsNames) {
    throwIfAborted(opts.signal);
    if (opts.namespaces && !opts.namespaces.has(ns)) continue;
    const nsDir = join(base, ns);
    const st = await lstat(nsDir).catch(() => undefined);
    if (!st) continue;
    if (st.isSymbolicLink()) {
      suspicious.push({ path: nsDir, namespace: ns, reason: `symlink to ${await readlink(nsDir).catch(() => '?')} (not followed)` });
      continue;
    }
    if (!st.isDirectory()) {
      suspicious.push({ path: nsDir, namespace: ns, reason: 'not a directory' });
      continue;
    }
    let ids: string[];
    try {
      ids = await readdir(nsDir);
    } catch (err) {
      blind.push({ what: nsDir, reason: errCode(err) });
      continue;
    }
    const found = await Promise.all(
      ids.map(async (id): Promise<Bundle | undefined> => {
        const dir = join(nsDir, id);
        const s = await lstat(dir).catch(() => undefined);
        if (!s) return undefined; // removed while we looked
        if (s.isSymbolicLink()) {
          suspicious.push({ path: dir, namespace: ns, id, reason: `symlink to ${await readlink(dir).catch(() => '?')} (not followed)` });
          return undefined;
        }
        if (!s.isDirectory()) {
          suspicious.push({ path: dir, namespace: ns, id, reason: 'not a directory' });
          return undefined;
        }
        return readBundle(ns, id, dir, s.mtimeMs);
      }),
    );
    for (const b of found) if (b) bundles.push(b);
  }
  return { bundles, suspicious, blind };
}
