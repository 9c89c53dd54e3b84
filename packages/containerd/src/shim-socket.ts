// Where a runc-v2 shim listens, computed the way containerd computes it (runtime/v2/shim/util_unix.go,
// containerd ≥ 1.4.3 through 1.7): `unix:///run/containerd/s/<sha256(join(address, namespace, id))>`, where
// `address` is containerd's gRPC socket and `id` the shim's *group* id. Because the name hashes containerd's own
// address, several containerd instances can share /run/containerd/s/ without colliding — and we can tell which
// socket files belong to the instance we judge without trusting anything written in them.
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';

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
  /** `start` or `delete` for containerd's short-lived invocations of the binary; undefined for the serving shim. */
  action: string | undefined;
  publishBinary: string | undefined;
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
  // The action is the first argument that is neither a flag nor a flag's value (flags here all take one value).
  let action: string | undefined;
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a.startsWith('-')) {
      if (!a.includes('=') && !BOOLEAN_FLAGS.has(a.replace(/^-+/, ''))) i++;
      continue;
    }
    action = a;
    break;
  }
  return { binary: base, namespace: flag('namespace'), id: flag('id'), address: flag('address'), action, publishBinary: flag('publish-binary') };
}

const BOOLEAN_FLAGS = new Set(['debug', 'v', 'version']);

/**
 * The long-lived shim that serves tasks (`-namespace ns -id id -address sock`), as opposed to containerd's `shim start`
 * and `shim delete` invocations of the same binary, which carry the same three flags plus `-publish-binary` and an
 * action, and live only for the create or the cleanup of a dead shim.
 */
export function isServingShim(a: ShimArgs): boolean {
  return a.action === undefined && a.publishBinary === undefined && a.address !== undefined && a.namespace !== undefined && a.id !== undefined;
}

/** Whether `argv` is the serving shim of (address, namespace, group id). `address` is containerd's socket path. */
export function isShimOf(argv: string[], address: string, namespace?: string, groupId?: string): boolean {
  const a = parseShimArgv(argv);
  if (!a || !isServingShim(a) || socketPath(a.address ?? '') !== address) return false;
  return (namespace === undefined || a.namespace === namespace) && (groupId === undefined || a.id === groupId);
}

/** containerd's address as a plain path (`unix://` dropped, made absolute) so two spellings compare equal. */
export function socketPath(address: string): string {
  return resolve(address.replace(/^unix:\/\//, ''));
}
