// Adds what the journal and the kernel said about the containers a finding names: the containerd lines an operator
// would otherwise `journalctl -u containerd | grep <id>` for, and OOM kills (a shim or container killed by the OOM
// killer is a classic source of stale sockets, upstream containerd#11292). Best effort: the tools may be missing,
// the journal empty, dmesg restricted; each becomes a blind-spot line, never a failure.
import { execFile } from 'node:child_process';
import type { Finding } from './findings.js';
import type { Snapshot } from './gather.js';

const MAX_LINES_PER_FINDING = 5;

function runTool(cmd: string, args: string[], signal: AbortSignal | undefined): Promise<{ out?: string; problem?: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 3000, maxBuffer: 32 * 1024 * 1024, signal, encoding: 'utf8' }, (err, stdout) => {
      if (err) {
        const code = (err as { code?: unknown }).code;
        resolve({ problem: code === 'ENOENT' ? `${cmd} not installed` : `${cmd} failed (${typeof code === 'string' || typeof code === 'number' ? code : err.message.split('\n')[0]})` });
      } else resolve({ out: stdout });
    });
  });
}

/** Kernel OOM lines that name a container: cgroup v1/v2 paths `/<ns>/<id>` or the killed pid. */
export function oomLinesFor(dmesg: string, ns: string, id: string, pids: number[]): string[] {
  const out: string[] = [];
  for (const line of dmesg.split('\n')) {
    if (!/oom|Killed process/i.test(line)) continue;
    if (line.includes(`/${ns}/${id}`) || pids.some((p) => new RegExp(`Killed process ${p}\\b`).test(line))) out.push(line.trim());
  }
  return out.slice(-MAX_LINES_PER_FINDING);
}

export async function addLogEvidence(findings: Finding[], snap: Snapshot, signal: AbortSignal | undefined): Promise<string[]> {
  const blind: string[] = [];
  const [journal, kernel] = await Promise.all([
    runTool('journalctl', ['-u', 'containerd', '--since', '-2h', '-n', '20000', '--no-pager', '-o', 'short-iso', '-q'], signal),
    runTool('dmesg', ['--time-format', 'iso'], signal),
  ]);
  if (journal.problem) blind.push(`containerd journal: ${journal.problem}`);
  if (kernel.problem) blind.push(`kernel log: ${kernel.problem}`);
  const journalLines = journal.out?.split('\n') ?? [];
  for (const f of findings) {
    if (f.containerId === undefined || f.namespace === undefined) continue;
    const id = f.containerId;
    if (journalLines.length > 0) {
      const hits = journalLines.filter((l) => l.includes(id)).slice(-MAX_LINES_PER_FINDING);
      if (hits.length > 0) f.evidence.journal = hits;
    }
    if (kernel.out) {
      const pids = snap.tasks.filter((t) => t.namespace === f.namespace && t.id === id && t.pid > 0).map((t) => t.pid);
      const hits = oomLinesFor(kernel.out, f.namespace, id, pids);
      if (hits.length > 0) f.evidence.oomKills = hits;
    }
  }
  return blind;
}
