// containerd's gRPC API over its unix socket, with our own minimal .proto subset (./proto). Why not a generated
// client: we need six methods, and a hand-written subset keeps the dependency on containerd's API explicit and small.
//
// Every call: the namespace in the `containerd-namespace` metadata key (containerd's own convention), a deadline, the
// caller's AbortSignal wired to call.cancel(), and the project's one retry loop (src/core/retry.ts) with a small
// budget — a doctor must answer quickly, and "containerd is unreachable" is itself a finding, not a reason to wait.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TransshipError, cancelledError, type ErrorCode } from '@transship/core/errors';
import { classify, RetryBudget } from '@transship/core/retry';
import { observedRetry } from '@transship/core/observed-retry';
import { containerdRpcTotal } from './metrics.js';

const PROTO_DIR = join(dirname(fileURLToPath(import.meta.url)), 'proto');
const PROTO_FILES = ['types.proto', 'version.proto', 'namespaces.proto', 'containers.proto', 'tasks.proto', 'events.proto', 'task-events.proto'];

let packageDefinition: protoLoader.PackageDefinition | undefined;
function definitions(): protoLoader.PackageDefinition {
  // keepCase: field names stay as in the .proto (container_id), which is also how containerd's docs name them.
  packageDefinition ??= protoLoader.loadSync(PROTO_FILES, { includeDirs: [PROTO_DIR], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  return packageDefinition;
}

/** A method of the proto subset (serializers included): the client's calls, and tests that encode real messages. */
export function protoMethod(service: string, name: string): protoLoader.MethodDefinition<object, object> {
  const svc = definitions()[service] as protoLoader.ServiceDefinition | undefined;
  const m = svc?.[name];
  if (!m) throw new TransshipError('TS_INTERNAL', `proto subset lacks ${service}/${name}`);
  return m;
}

// ---- decoded message shapes (what proto-loader produces with the options above) ----
export interface Timestamp {
  seconds: string;
  nanos: number;
}
export interface AnyMessage {
  type_url: string;
  value: Buffer;
}
export type TaskStatus = 'UNKNOWN' | 'CREATED' | 'RUNNING' | 'STOPPED' | 'PAUSED' | 'PAUSING';
export interface ProcessMessage {
  container_id: string;
  id: string;
  pid: number;
  status: TaskStatus;
  exit_status: number;
  exited_at: Timestamp | null;
}
export interface ContainerMessage {
  id: string;
  labels: Record<string, string>;
  image: string;
  runtime: { name: string; options: AnyMessage | null } | null;
  spec: AnyMessage | null;
  snapshotter: string;
  snapshot_key: string;
  created_at: Timestamp | null;
  updated_at: Timestamp | null;
}

export function timestampToDate(ts: Timestamp | null | undefined): Date | undefined {
  if (!ts) return undefined;
  const ms = Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6);
  // containerd sends the zero time (0001-01-01) for "never"; proto3 leaves it unset or negative.
  return ms > 0 ? new Date(ms) : undefined;
}

// ---- errors ----
const GRPC_TO_CODE: Partial<Record<number, ErrorCode>> = {
  [grpc.status.UNAVAILABLE]: 'TS_CONTAINERD_UNREACHABLE',
  [grpc.status.DEADLINE_EXCEEDED]: 'TS_TIMEOUT',
  [grpc.status.NOT_FOUND]: 'TS_NOT_FOUND',
  [grpc.status.FAILED_PRECONDITION]: 'TS_CONTAINERD_REJECTED',
  [grpc.status.ALREADY_EXISTS]: 'TS_CONTAINERD_REJECTED',
  [grpc.status.PERMISSION_DENIED]: 'TS_ACCESS_DENIED',
  [grpc.status.UNAUTHENTICATED]: 'TS_ACCESS_DENIED',
};

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'number' && 'metadata' in err;
}

/** A gRPC status read off the wire (the watcher's own HTTP/2 stream reader) → the error table's code. */
export function errorFromGrpcStatus(code: number, message: string, what: string): TransshipError {
  return new TransshipError(GRPC_TO_CODE[code] ?? 'TS_CONTAINERD_REJECTED', `${what}: ${message || (grpc.status[code] ?? `gRPC status ${code}`)}`, { details: { grpcCode: grpc.status[code] ?? code } });
}

export function fromGrpcError(err: unknown, what: string): TransshipError {
  if (!isServiceError(err)) return new TransshipError('TS_INTERNAL', `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  const code = GRPC_TO_CODE[err.code] ?? 'TS_CONTAINERD_REJECTED';
  return new TransshipError(code, `${what}: ${err.details || err.message}`, { cause: err, details: { grpcCode: grpc.status[err.code] ?? err.code } });
}

export interface ContainerdClientOptions {
  /** containerd's gRPC socket: a path or `unix:///path`. */
  address: string;
  /** Deadline of one attempt. */
  timeoutMs?: number;
  maxAttempts?: number;
  maxElapsedMs?: number;
}

export interface CallOptions {
  namespace?: string;
  signal?: AbortSignal | undefined;
  timeoutMs?: number;
  /** Mutations are retried only on UNAVAILABLE (the request never reached containerd), never on a deadline. */
  mutation?: boolean;
}

export function socketPathOf(address: string): string {
  return address.replace(/^unix:\/\//, '');
}

export class ContainerdClient {
  readonly address: string;
  private readonly client: grpc.Client;
  private readonly timeoutMs: number;
  private readonly maxAttempts: number;
  private readonly maxElapsedMs: number;
  private readonly budget = new RetryBudget(20, 5, 1);

  constructor(opts: ContainerdClientOptions) {
    this.address = socketPathOf(opts.address);
    if (!this.address.startsWith('/')) throw new TransshipError('TS_USAGE', `containerd address must be an absolute socket path, got ${opts.address}`);
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.maxAttempts = opts.maxAttempts ?? 3;
    this.maxElapsedMs = opts.maxElapsedMs ?? 8000;
    this.client = new grpc.Client(`unix://${this.address}`, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      // One attempt = one connection try: a dead socket must fail fast, our retry loop decides about the next.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    });
  }

  close(): void {
    this.client.close();
  }

  private unaryOnce<Res>(m: protoLoader.MethodDefinition<object, object>, req: object, opts: CallOptions, signal: AbortSignal): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      if (signal.aborted) return reject(cancelledError(signal));
      const md = new grpc.Metadata();
      if (opts.namespace !== undefined) md.set('containerd-namespace', opts.namespace);
      const deadline = new Date(Date.now() + (opts.timeoutMs ?? this.timeoutMs));
      const onAbort = (): void => call.cancel();
      const call = this.client.makeUnaryRequest<object, Res>(m.path, m.requestSerialize, m.responseDeserialize as (b: Buffer) => Res, req, md, { deadline }, (err, res) => {
        signal.removeEventListener('abort', onAbort);
        const method = m.path.replace(/^.*\.(\w+\/\w+)$/, '$1');
        containerdRpcTotal.inc({ method, status: err ? (grpc.status[err.code] ?? String(err.code)) : 'OK' });
        if (signal.aborted) return reject(cancelledError(signal));
        if (err) return reject(fromGrpcError(err, `containerd ${method}`));
        if (res === undefined) return reject(new TransshipError('TS_CONTAINERD_PROTOCOL', `containerd ${method}: empty reply`));
        resolve(res);
      });
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private call<Res>(service: string, name: string, req: object, opts: CallOptions = {}): Promise<Res> {
    const m = protoMethod(service, name);
    return observedRetry({
      store: `containerd:${this.address}`,
      operation: `containerd.${name}`,
      signal: opts.signal,
      retry: { maxAttempts: this.maxAttempts, maxElapsedMs: this.maxElapsedMs, baseDelayMs: 100, maxDelayMs: 1000 },
      budget: this.budget,
      classify: (err) => {
        const v = classify(err);
        if (opts.mutation && v.retryable && !(err instanceof TransshipError && err.code === 'TS_CONTAINERD_UNREACHABLE')) return { retryable: false, reason: v.reason };
        return v;
      },
    }, (signal) => this.unaryOnce<Res>(m, req, opts, signal));
  }

  async version(opts: CallOptions = {}): Promise<{ version: string; revision: string }> {
    return this.call('containerd.services.version.v1.Version', 'Version', {}, opts);
  }

  async listNamespaces(opts: CallOptions = {}): Promise<string[]> {
    const res = await this.call<{ namespaces: Array<{ name: string }> }>('containerd.services.namespaces.v1.Namespaces', 'List', {}, opts);
    return res.namespaces.map((n) => n.name);
  }

  async listContainers(namespace: string, opts: CallOptions & { filters?: string[] } = {}): Promise<ContainerMessage[]> {
    const res = await this.call<{ containers: ContainerMessage[] }>('containerd.services.containers.v1.Containers', 'List', { filters: opts.filters ?? [] }, { ...opts, namespace });
    return res.containers;
  }

  async listTasks(namespace: string, opts: CallOptions = {}): Promise<ProcessMessage[]> {
    const res = await this.call<{ tasks: ProcessMessage[] }>('containerd.services.tasks.v1.Tasks', 'List', {}, { ...opts, namespace });
    return res.tasks;
  }

  /** The task's init process, or undefined when containerd has no task for the container. */
  async getTask(namespace: string, containerId: string, opts: CallOptions = {}): Promise<ProcessMessage | undefined> {
    try {
      const res = await this.call<{ process: ProcessMessage | null }>('containerd.services.tasks.v1.Tasks', 'Get', { container_id: containerId }, { ...opts, namespace });
      return res.process ?? undefined;
    } catch (err) {
      if (err instanceof TransshipError && err.code === 'TS_NOT_FOUND') return undefined;
      throw err;
    }
  }

  async deleteTask(namespace: string, containerId: string, opts: CallOptions = {}): Promise<{ pid: number; exit_status: number }> {
    return this.call('containerd.services.tasks.v1.Tasks', 'Delete', { container_id: containerId }, { ...opts, namespace, mutation: true });
  }

  async killTask(namespace: string, containerId: string, signal: number, all: boolean, opts: CallOptions = {}): Promise<void> {
    await this.call('containerd.services.tasks.v1.Tasks', 'Kill', { container_id: containerId, signal, all }, { ...opts, namespace, mutation: true });
  }
}
