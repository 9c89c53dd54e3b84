// runc's own state (`<runc root>/<ns>/<id>/state.json`, root `/run/containerd/runc` unless the runtime options say
// otherwise). When a shim dies without `runc delete`, this stays and the next create of the same id fails with
// "runc create failed: container with given ID already exists". The directory is keyed by (ns, id) only, so other
// containerd instances with the same namespace share it: we call it leftover only when its init process is dead.
import { readdir, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { readSmallFile } from './bundles.js';
import type { BlindSpot } from './procfs.js';

export const DEFAULT_RUNC_ROOT = '/run/containerd/runc';

export interface RuncState {
  namespace: string;
  id: string;
  dir: string;
  initPid?: number | undefined;
  /** Init start time in clock ticks (as runc records it), to tell a live init from a reused pid. */
  initStart?: number | undefined;
  /** The bundle runc was created from (`bundle=` label): under whose state dir it lies says whose container it is. */
  bundle?: string | undefined;
  problem?: string | undefined;
}

export function parseRuncState(text: string): { initPid?: number; initStart?: number; bundle?: string } {
  try {
    const s = JSON.parse(text) as { init_process_pid?: unknown; init_process_start?: unknown; config?: { labels?: unknown } };
    const pid = typeof s.init_process_pid === 'number' ? s.init_process_pid : undefined;
    const start = typeof s.init_process_start === 'number' ? s.init_process_start : typeof s.init_process_start === 'string' ? Number(s.init_process_start) : undefined;
    // runc records the directory it was created in as the label `bundle=<dir>`.
    const labels = Array.isArray(s.config?.labels) ? s.config.labels : [];
    const label = labels.find((l): l is string => typeof l === 'string' && l.startsWith('bundle='));
    return {
      ...(pid !== undefined ? { initPid: pid } : {}),
      ...(start !== undefined && Number.isFinite(start) ? { initStart: start } : {}),
      ...(label !== undefined ? { bundle: label.slice('bundle='.length) } : {}),
    };
  } catch {
    return {};
  }
}

export async function scanRuncStates(root: string, namespaces: string[]): Promise<{ states: RuncState[]; blind: BlindSpot[] }> {
  const states: RuncState[] = [];
  const blind: BlindSpot[] = [];
  for (const ns of namespaces) {
    const nsDir = join(root, ns);
    let ids: string[];
    try {
      ids = await readdir(nsDir);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code !== 'ENOENT') blind.push({ what: nsDir, reason: typeof code === 'string' ? code : 'EUNKNOWN' });
      continue;
    }
    for (const id of ids) {
      const dir = join(nsDir, id);
      const st = await lstat(dir).catch(() => undefined);
      if (!st?.isDirectory()) continue; // symlinks and files are not runc's: not ours to judge
      const f = await readSmallFile(join(dir, 'state.json'), 4 * 1024 * 1024);
      if (f.text === undefined) {
        states.push({ namespace: ns, id, dir, problem: f.problem ?? 'no state.json' });
        continue;
      }
      states.push({ namespace: ns, id, dir, ...parseRuncState(f.text) });
    }
  }
  return { states, blind };
}
