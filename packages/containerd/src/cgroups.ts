// Where a container's cgroups are, computed once for the doctor and the watcher (they used to disagree: the doctor
// looked only at cgroupfs `/<ns>/<id>` under five v1 controllers, the watcher followed the spec's
// `linux.cgroupsPath`, systemd form included, under every mounted v1 hierarchy). A runtime spec (the container's
// from the API, or a bundle's config.json) gives the shim group id and the cgroup path; CgroupLayout turns that path
// into the directories of this host's hierarchies (one on v2, one per mounted v1 hierarchy).
import { lstatSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { shimGroupId } from './shim-socket.js';

const CGROUP_V1 = ['memory', 'pids', 'cpu', 'cpuacct', 'cpuset', 'blkio', 'devices', 'freezer', 'systemd', 'hugetlb', 'net_cls', 'perf_event', 'unified'];

/** systemd's slice naming: `a-b-c.slice` lives at `a.slice/a-b.slice/a-b-c.slice`. */
export function expandSlice(slice: string): string {
  if (slice === '-.slice' || slice === '') return '';
  const name = slice.replace(/\.slice$/, '');
  const parts = name.split('-');
  const out: string[] = [];
  for (let i = 1; i <= parts.length; i++) out.push(`${parts.slice(0, i).join('-')}.slice`);
  return out.join('/');
}

/** A runtime spec's `linux.cgroupsPath` as a path relative to a cgroup hierarchy root. */
export function cgroupRelPath(cgroupsPath: string, id: string): string {
  // runc puts a container whose spec has no cgroupsPath at /<id>; ctr and CRI always set one.
  if (cgroupsPath === '') return join('/', id);
  const systemd = /^([^:/]*):([^:]*):([^:]+)$/.exec(cgroupsPath);
  if (systemd) {
    const [, slice = '', prefix = '', name = ''] = systemd;
    return join('/', expandSlice(slice || 'system.slice'), name.endsWith('.slice') ? name : `${prefix}-${name}.scope`);
  }
  return join('/', cgroupsPath);
}

/** What the doctor and the watcher need from a runtime spec. */
export interface SpecFacts {
  /** The id the container's shim is keyed by (the pod sandbox for Kubernetes containers). */
  groupId: string;
  /** Its cgroup, relative to a hierarchy root. */
  cgroupRel: string;
}

/**
 * Facts of container `id` from its runtime spec (JSON text or bytes). Without a readable spec: the container's own id
 * and ctr's `/<ns>/<id>` — a wrong guess only misses a leftover, it never invents one.
 */
export function specFacts(namespace: string, id: string, spec: string | Buffer | undefined): SpecFacts {
  const fallback = { groupId: id, cgroupRel: join('/', namespace, id) };
  if (spec === undefined || spec.length === 0) return fallback;
  try {
    const s = JSON.parse(typeof spec === 'string' ? spec : spec.toString('utf8')) as { annotations?: Record<string, unknown>; linux?: { cgroupsPath?: unknown } };
    const cgroupsPath = typeof s.linux?.cgroupsPath === 'string' ? s.linux.cgroupsPath : '';
    return { groupId: shimGroupId(id, s.annotations), cgroupRel: cgroupRelPath(cgroupsPath, id) };
  } catch {
    return fallback; // garbage: the doctor reports the bundle's problems; here the defaults stand
  }
}

/** The cgroup hierarchies mounted under `root` (v2: the root itself; v1: each mounted hierarchy once). */
export class CgroupLayout {
  readonly v2: boolean;
  readonly roots: string[];

  constructor(readonly root = '/sys/fs/cgroup') {
    this.v2 = lstatSync(join(root, 'cgroup.controllers'), { throwIfNoEntry: false }) !== undefined;
    // v1: cpu and cpuacct are usually one hierarchy behind two names: each real one once.
    const seen = new Set<string>();
    this.roots = this.v2
      ? [root]
      : CGROUP_V1.map((c) => join(root, c)).filter((dir) => {
          try {
            const real = realpathSync(dir);
            if (seen.has(real)) return false;
            seen.add(real);
            return statSync(real).isDirectory();
          } catch {
            return false;
          }
        });
  }

  /** The directories of a cgroup path (relative to a hierarchy root) in every hierarchy. */
  dirs(rel: string): string[] {
    return this.roots.map((r) => join(r, rel));
  }
}
