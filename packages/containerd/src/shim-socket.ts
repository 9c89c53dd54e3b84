// Where a runc-v2 shim listens, computed the way containerd computes it (runtime/v2/shim/util_unix.go,
// containerd ≥ 1.4.3 through 1.7): `unix:///run/containerd/s/<sha256(join(address, namespace, id))>`, where
// `address` is containerd's gRPC socket and `id` the shim's *group* id. Because the name hashes containerd's own
// address, several containerd instances can share /run/containerd/s/ without colliding — and we can tell which
// socket files belong to the instance we judge without trusting anything written in them.
import { createHash } from 'node:crypto';
import { join } from 'node:path';

export const SHIM_SOCKET_DIR = '/run/containerd/s';

/** Annotations that make several containers share one shim (a Kubernetes pod, or an explicit runc group). */
export const GROUP_ANNOTATIONS = ['io.containerd.runc.v2.group', 'io.kubernetes.cri.sandbox-id'] as const;

export function shimSocketPath(address: string, namespace: string, id: string, dir = SHIM_SOCKET_DIR): string {
  return join(dir, createHash('sha256').update(join(address, namespace, id)).digest('hex'));
}

/** containerd 2.x also creates a debug socket per shim. */
export function shimDebugSocketPath(address: string, namespace: string, id: string, dir = SHIM_SOCKET_DIR): string {
  return join(dir, createHash('sha256').update(join(address, namespace, id, 'debug')).digest('hex'));
}

/** The id a container's shim is keyed by: the group annotation when present, else the container id. */
export function shimGroupId(id: string, annotations: Record<string, unknown> | undefined): string {
  for (const key of GROUP_ANNOTATIONS) {
    const v = annotations?.[key];
    if (typeof v === 'string' && v !== '') return v;
  }
  return id;
}

export type ParsedAddress = { kind: 'path'; path: string } | { kind: 'abstract'; name: string } | { kind: 'invalid'; reason: string };

/**
 * Parses a bundle's `address` file (`unix:///run/containerd/s/<hex>`, or `unix://@/containerd-shim/…` before 1.4.3).
 * The file is written by a shim we may not trust to be sane: anything else is reported, never followed.
 */
export function parseShimAddress(raw: string): ParsedAddress {
  const s = raw.trim();
  if (s.length === 0) return { kind: 'invalid', reason: 'empty' };
  if (s.length > 4096 || /[\0\n]/.test(s)) return { kind: 'invalid', reason: 'not a single line' };
  const rest = s.startsWith('unix://') ? s.slice('unix://'.length) : s;
  if (rest.startsWith('@')) return { kind: 'abstract', name: rest };
  if (!rest.startsWith('/')) return { kind: 'invalid', reason: 'not an absolute unix socket address' };
  if (rest.split('/').includes('..')) return { kind: 'invalid', reason: 'contains ..' };
  return { kind: 'path', path: rest };
}

/** Shim command line: `containerd-shim-runc-v2 -namespace <ns> -id <id> -address <containerd sock> [...]`. */
export interface ShimArgs {
  binary: string;
  namespace: string | undefined;
  id: string | undefined;
  address: string | undefined;
}

export function parseShimArgv(argv: string[]): ShimArgs | undefined {
  const binary = argv[0];
  if (binary === undefined) return undefined;
  const base = binary.slice(binary.lastIndexOf('/') + 1);
  if (!base.startsWith('containerd-shim')) return undefined;
  const flag = (name: string): string | undefined => {
    for (let i = 1; i < argv.length; i++) {
      const a = argv[i];
      if (a === `-${name}` || a === `--${name}`) return argv[i + 1];
      if (a?.startsWith(`-${name}=`)) return a.slice(name.length + 2);
      if (a?.startsWith(`--${name}=`)) return a.slice(name.length + 3);
    }
    return undefined;
  };
  return { binary: base, namespace: flag('namespace'), id: flag('id'), address: flag('address') };
}
