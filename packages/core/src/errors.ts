// One table of error codes for the whole project (undici-style): callers and tests compare `code`, never message
// text. Each code says whether retrying could help and which CLI exit code it maps to, so the retry classifier and
// the CLI read the same facts.

export const ExitCode = {
  ok: 0,
  /** Something failed at run time (network, storage, corruption found by verify). */
  failure: 1,
  /** The user's input was wrong: bad reference, config, flags. Retrying the same command will not help. */
  usage: 2,
  /** Data was found corrupt or inconsistent (verify, doctor findings). */
  findings: 3,
  /** Cancelled by SIGINT/SIGTERM. */
  cancelled: 130,
} as const;

interface CodeSpec {
  retryable: boolean;
  exit: number;
  summary: string;
}

export const ERROR_CODES = {
  // input and configuration
  TS_INVALID_DIGEST: { retryable: false, exit: ExitCode.usage, summary: 'malformed digest' },
  TS_UNSUPPORTED_ALGORITHM: { retryable: false, exit: ExitCode.usage, summary: 'unsupported digest algorithm' },
  TS_INVALID_REFERENCE: { retryable: false, exit: ExitCode.usage, summary: 'malformed image or store reference' },
  TS_INVALID_NAME: { retryable: false, exit: ExitCode.usage, summary: 'invalid repository name' },
  TS_INVALID_TAG: { retryable: false, exit: ExitCode.usage, summary: 'invalid tag' },
  TS_CONFIG_INVALID: { retryable: false, exit: ExitCode.usage, summary: 'invalid configuration' },
  TS_USAGE: { retryable: false, exit: ExitCode.usage, summary: 'invalid command usage' },
  // content
  TS_DIGEST_MISMATCH: { retryable: false, exit: ExitCode.failure, summary: 'content does not match its digest' },
  TS_SIZE_MISMATCH: { retryable: false, exit: ExitCode.failure, summary: 'content does not match its declared size' },
  TS_MANIFEST_INVALID: { retryable: false, exit: ExitCode.failure, summary: 'malformed manifest or index' },
  TS_MANIFEST_BLOB_UNKNOWN: { retryable: false, exit: ExitCode.failure, summary: 'manifest references a missing blob' },
  TS_ARCHIVE_INVALID: { retryable: false, exit: ExitCode.failure, summary: 'truncated or malformed archive' },
  TS_ARCHIVE_UNSAFE_PATH: { retryable: false, exit: ExitCode.failure, summary: 'archive entry escapes the layout' },
  TS_LAYOUT_INVALID: { retryable: false, exit: ExitCode.failure, summary: 'malformed OCI layout' },
  TS_NOT_FOUND: { retryable: false, exit: ExitCode.failure, summary: 'not found' },
  TS_TAG_UNKNOWN: { retryable: false, exit: ExitCode.failure, summary: 'tag not found' },
  TS_BLOB_UNKNOWN: { retryable: false, exit: ExitCode.failure, summary: 'blob not found' },
  TS_UPLOAD_STATE_INVALID: { retryable: false, exit: ExitCode.failure, summary: 'upload session state is stale or inconsistent (restart the upload)' },
  TS_CORRUPT: { retryable: false, exit: ExitCode.findings, summary: 'stored content is corrupt' },
  // storage and network
  TS_NETWORK: { retryable: true, exit: ExitCode.failure, summary: 'network error' },
  TS_TIMEOUT: { retryable: true, exit: ExitCode.failure, summary: 'request timed out' },
  TS_THROTTLED: { retryable: true, exit: ExitCode.failure, summary: 'backend asked to slow down' },
  TS_BACKEND_UNAVAILABLE: { retryable: true, exit: ExitCode.failure, summary: 'backend temporarily unavailable' },
  TS_ACCESS_DENIED: { retryable: false, exit: ExitCode.failure, summary: 'access denied (check credentials)' },
  TS_NO_SUCH_BUCKET: { retryable: false, exit: ExitCode.failure, summary: 'bucket does not exist' },
  TS_TRANSFER_CORRUPTED: { retryable: true, exit: ExitCode.failure, summary: 'bytes were corrupted in transit (the server\'s checksum of the body did not match)' },
  TS_BACKEND_REJECTED: { retryable: false, exit: ExitCode.failure, summary: 'backend rejected the request' },
  TS_RETRY_EXHAUSTED: { retryable: false, exit: ExitCode.failure, summary: 'gave up after retries' },
  TS_RETRY_BUDGET_EXHAUSTED: { retryable: false, exit: ExitCode.failure, summary: 'retry budget exhausted' },
  TS_PERMISSION_DENIED: { retryable: false, exit: ExitCode.failure, summary: 'permission denied on local file' },
  TS_UNAUTHORIZED: { retryable: false, exit: ExitCode.failure, summary: 'registry authentication failed' },
  TS_CANCELLED: { retryable: false, exit: ExitCode.cancelled, summary: 'cancelled' },
  TS_INTERNAL: { retryable: false, exit: ExitCode.failure, summary: 'internal error' },
  // containerd lifecycle
  TS_CONTAINERD_UNREACHABLE: { retryable: true, exit: ExitCode.failure, summary: 'containerd is unreachable' },
  TS_PRECONDITION_CHANGED: { retryable: false, exit: ExitCode.failure, summary: 'state changed before acting' },
  TS_CONTAINERD_REJECTED: { retryable: false, exit: ExitCode.failure, summary: 'containerd rejected the request' },
  TS_CONTAINERD_PROTOCOL: { retryable: false, exit: ExitCode.failure, summary: 'unexpected reply from containerd' },
  TS_DOCTOR_INCOMPLETE: { retryable: false, exit: ExitCode.failure, summary: 'diagnosis could not see enough to judge' },
  TS_REPAIR_FAILED: { retryable: false, exit: ExitCode.failure, summary: 'a repair action failed' },
} as const satisfies Record<string, CodeSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface TransshipErrorOptions {
  cause?: unknown;
  /** Facts for logs and --json output (digest, key, status…). Never secrets. */
  details?: Record<string, unknown>;
  /** HTTP status seen from a backend, when there was one. */
  status?: number;
  /** Server-suggested delay before the next attempt (Retry-After), in ms. */
  retryAfterMs?: number;
}

export class TransshipError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  readonly status: number | undefined;
  readonly retryAfterMs: number | undefined;

  constructor(code: ErrorCode, message: string, options: TransshipErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TransshipError';
    this.code = code;
    this.details = options.details ?? {};
    this.status = options.status;
    this.retryAfterMs = options.retryAfterMs;
  }

  get retryable(): boolean {
    return ERROR_CODES[this.code].retryable;
  }

  get exitCode(): number {
    return ERROR_CODES[this.code].exit;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, ...this.details };
  }
}

export function isTransshipError(err: unknown, code?: ErrorCode): err is TransshipError {
  return err instanceof TransshipError && (code === undefined || err.code === code);
}

/**
 * Runs a synchronous call whose failure is an expected answer (a missing file, an empty non-blocking socket) with
 * stack capture off: building the Error's stack is most of what such a miss costs, and nobody reads it.
 */
export function withoutStackTraces<T>(fn: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return fn();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** True for the errors an AbortSignal produces (ours or the platform's). */
export function isAbortError(err: unknown): boolean {
  if (isTransshipError(err, 'TS_CANCELLED')) return true;
  if (!(err instanceof Error)) return false;
  return err.name === 'AbortError' || (err as { code?: unknown }).code === 'ABORT_ERR';
}

export function cancelledError(signal?: AbortSignal): TransshipError {
  const reason: unknown = signal?.reason;
  const why = reason instanceof Error ? reason.message : typeof reason === 'string' ? reason : 'operation cancelled';
  return new TransshipError('TS_CANCELLED', `cancelled: ${why}`, { cause: reason });
}

/**
 * Throws a TS_CANCELLED error when the signal has fired; call at every step boundary. The one cancellation check:
 * not `signal.throwIfAborted()` (the platform's AbortError has no code from our table) nor a hand-written
 * `if (signal.aborted) throw …`.
 */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw cancelledError(signal);
}

/** First line of an error's message plus its code, for log lines and summaries. */
export function errorSummary(err: unknown): { code: string; message: string } {
  if (err instanceof TransshipError) return { code: err.code, message: firstLine(err.message) };
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code ?? (err as { name?: unknown }).name;
    return { code: typeof code === 'string' ? code : 'Error', message: firstLine(err.message) };
  }
  return { code: 'unknown', message: firstLine(String(err)) };
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i === -1 ? s : s.slice(0, i);
}

/** Maps a Node fs error to our table so the user sees an actionable message. */
export function fromFsError(err: unknown, path: string): TransshipError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') return new TransshipError('TS_NOT_FOUND', `no such file or directory: ${path}`, { cause: err, details: { path } });
  if (code === 'EACCES' || code === 'EPERM')
    return new TransshipError('TS_PERMISSION_DENIED', `permission denied: ${path} (check ownership and mode)`, { cause: err, details: { path } });
  return new TransshipError('TS_INTERNAL', `file system error on ${path}: ${(err as Error).message}`, { cause: err, details: { path } });
}
