// Measuring a subprocess: wall time from spawn to exit, and peak RSS. Peak RSS comes from GNU time's `%M`
// (ru_maxrss of the child, exact) when /usr/bin/time is installed, else from polling the child's VmHWM (the
// kernel's own high-water mark, so a poll only misses growth after its last read). Every child runs in its own
// process group, so a timeout or an abort ends it and whatever it started — and nothing else.
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const GNU_TIME = '/usr/bin/time';

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Ends the process group after this long (default 10 minutes). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface Measured {
  command: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  wallMs: number;
  /** Peak resident set size of the process, bytes (undefined when it could not be read). */
  peakRss: number | undefined;
  /** User + system CPU time of the process and its waited-for children, ms (GNU time only). */
  cpuMs: number | undefined;
}

let timeChecked: boolean | undefined;

/** Whether GNU time is there, installing Debian's `time` (a few KB) once when we are root. */
export function haveGnuTime(): boolean {
  if (timeChecked !== undefined) return timeChecked;
  const present = () => {
    try {
      accessSync(GNU_TIME, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (!present() && process.getuid?.() === 0) {
    spawnSync('apt-get', ['-o', 'DPkg::Lock::Timeout=120', 'install', '-y', '--no-install-recommends', 'time'], {
      stdio: 'ignore',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  }
  timeChecked = present();
  return timeChecked;
}

export async function runMeasured(cmd: string, args: string[], opts: RunOptions = {}): Promise<Measured> {
  const useTime = haveGnuTime();
  const dir = useTime ? await mkdtemp(join(tmpdir(), 'transship-bench-time-')) : undefined;
  const timeFile = dir ? join(dir, 'time.txt') : undefined;
  const [file, argv] = timeFile ? [GNU_TIME, ['-f', '%M %U %S', '-o', timeFile, cmd, ...args]] : [cmd, args];
  const command = [cmd, ...args].join(' ');
  const started = process.hrtime.bigint();
  const child = spawn(file, argv, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-20_000)));
  let polledHwm = 0;
  const poll = timeFile
    ? undefined
    : setInterval(() => {
        polledHwm = Math.max(polledHwm, readHwm(child.pid) ?? 0);
      }, 20);
  const killGroup = () => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  };
  const timer = setTimeout(killGroup, opts.timeoutMs ?? 600_000);
  opts.signal?.addEventListener('abort', killGroup, { once: true });
  try {
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (c, s) => resolve([c, s]));
    });
    const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
    let peakRss: number | undefined = polledHwm > 0 ? polledHwm : undefined;
    let cpuMs: number | undefined;
    if (timeFile) {
      // GNU time writes "Command exited with non-zero status N" before the format's line when the child fails.
      const lines = (await readFile(timeFile, 'utf8').catch(() => '')).trim().split('\n');
      const [kib, user, sys] = (lines.at(-1) ?? '').split(' ').map(Number);
      peakRss = kib !== undefined && Number.isFinite(kib) && kib > 0 ? kib * 1024 : undefined;
      cpuMs = user !== undefined && sys !== undefined && Number.isFinite(user + sys) ? (user + sys) * 1000 : undefined;
    }
    return { command, code, signal, stdout, stderr, wallMs, peakRss, cpuMs };
  } finally {
    clearTimeout(timer);
    if (poll) clearInterval(poll);
    opts.signal?.removeEventListener('abort', killGroup);
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}

/** Throws with the command's output tail unless it exited 0. */
export function check(m: Measured): Measured {
  if (m.code !== 0) {
    throw new Error(`${m.command} failed (${m.signal ?? `exit code ${m.code}`}):\n${(m.stderr || m.stdout).slice(-3000)}`);
  }
  return m;
}

/** VmHWM of a process, bytes. */
export function readHwm(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** utime + stime of a process so far, ms (0 once it is gone). */
export function processCpuMs(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // USER_HZ = 100 on Linux
  } catch {
    return 0;
  }
}

/** `skopeo --version` → `1.9.3`. */
export function toolVersion(cmd: string, args: string[], pattern: RegExp): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0 && !r.stdout) return 'not installed';
  return pattern.exec(`${r.stdout}\n${r.stderr}`)?.[1] ?? r.stdout.trim().split('\n')[0] ?? 'unknown';
}

/** Median of a non-empty list. */
export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/**
 * Waits until the processes `pids` together use less than `share` of one CPU over a `windowMs` window (giving up
 * after `maxMs`) and returns how long it waited, ms. Contenders share one RGW: work that one of them leaves running
 * in it (deletes, an OSD handing memory back) must not be charged to the next one's wall time or "CPU caused".
 */
export async function waitForIdle(pids: number[], opts: { share?: number; windowMs?: number; maxMs?: number } = {}): Promise<number> {
  const { share = 0.05, windowMs = 250, maxMs = 5000 } = opts;
  const total = () => pids.reduce((n, p) => n + processCpuMs(p), 0);
  const started = Date.now();
  for (;;) {
    const before = total();
    await new Promise((resolve) => setTimeout(resolve, windowMs));
    // /proc CPU times tick in 10 ms steps: one tick in the window is noise, not work.
    if (total() - before <= Math.max(share * windowMs, 10) || Date.now() - started >= maxMs) return Date.now() - started - windowMs;
  }
}
