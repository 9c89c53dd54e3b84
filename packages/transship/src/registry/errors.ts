// The one table that turns failures into distribution-spec error bodies. Handlers throw either a RegistryError (a
// spec code chosen on purpose, e.g. MANIFEST_BLOB_UNKNOWN) or a TransshipError from the core/store; the latter is
// mapped here by its stable `code`, never by message text, so every endpoint answers the same failure the same way.
import { isAbortError, isTransshipError, type ErrorCode } from '@transship/core/errors';

/** Codes from the OCI distribution spec (plus Distribution's UNAVAILABLE/UNKNOWN for backend trouble). */
export const SPEC_ERRORS = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: { status: 400, message: 'manifest references a manifest or blob unknown to registry' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  TOO_MANY_REQUESTS: { status: 429, message: 'too many requests' },
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
  UNKNOWN: { status: 500, message: 'unknown error' },
} as const;

export type SpecCode = keyof typeof SPEC_ERRORS;

export class RegistryError extends Error {
  readonly status: number;
  constructor(
    readonly code: SpecCode,
    message?: string,
    readonly detail?: unknown,
    /** Overrides the table's status where the spec says so (416 for out-of-order chunks, 413 for oversized bodies). */
    status?: number,
    /** Extra response headers (Range on 416, WWW-Authenticate on 401). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message ?? SPEC_ERRORS[code].message);
    this.name = 'RegistryError';
    this.status = status ?? SPEC_ERRORS[code].status;
  }
}

/** Core error code → spec code. Anything not listed is a server-side failure (500 UNKNOWN). */
const FROM_CORE: Partial<Record<ErrorCode, SpecCode>> = {
  TS_INVALID_DIGEST: 'DIGEST_INVALID',
  TS_UNSUPPORTED_ALGORITHM: 'DIGEST_INVALID',
  TS_DIGEST_MISMATCH: 'DIGEST_INVALID',
  TS_SIZE_MISMATCH: 'SIZE_INVALID',
  TS_INVALID_NAME: 'NAME_INVALID',
  TS_INVALID_TAG: 'MANIFEST_INVALID',
  TS_MANIFEST_INVALID: 'MANIFEST_INVALID',
  TS_MANIFEST_BLOB_UNKNOWN: 'MANIFEST_BLOB_UNKNOWN',
  TS_BLOB_UNKNOWN: 'BLOB_UNKNOWN',
  TS_UPLOAD_STATE_INVALID: 'BLOB_UPLOAD_UNKNOWN',
  TS_TAG_UNKNOWN: 'MANIFEST_UNKNOWN',
  TS_UNAUTHORIZED: 'UNAUTHORIZED',
  TS_THROTTLED: 'TOO_MANY_REQUESTS',
  TS_NETWORK: 'UNAVAILABLE',
  TS_TIMEOUT: 'UNAVAILABLE',
  TS_BACKEND_UNAVAILABLE: 'UNAVAILABLE',
  TS_RETRY_EXHAUSTED: 'UNAVAILABLE',
  TS_RETRY_BUDGET_EXHAUSTED: 'UNAVAILABLE',
};

export interface ErrorResponse {
  status: number;
  body: { errors: Array<{ code: SpecCode; message: string; detail: unknown }> };
  headers: Record<string, string>;
  /** True for failures of ours (5xx): logged at error level. */
  internal: boolean;
}

export function toErrorResponse(err: unknown): ErrorResponse {
  if (err instanceof RegistryError) {
    return { status: err.status, body: { errors: [{ code: err.code, message: err.message, detail: err.detail ?? {} }] }, headers: err.headers, internal: err.status >= 500 };
  }
  if (isTransshipError(err)) {
    const code = FROM_CORE[err.code] ?? (isAbortError(err) ? 'UNAVAILABLE' : 'UNKNOWN');
    const status = SPEC_ERRORS[code].status;
    // Client errors carry the core message (it says what was wrong); server errors do not leak backend details.
    const message = status < 500 ? err.message : SPEC_ERRORS[code].message;
    const headers: Record<string, string> = {};
    if (err.retryAfterMs !== undefined && status >= 429) headers['retry-after'] = String(Math.ceil(err.retryAfterMs / 1000));
    return { status, body: { errors: [{ code, message, detail: status < 500 ? err.details : { code: err.code } }] }, headers, internal: status >= 500 };
  }
  return { status: 500, body: { errors: [{ code: 'UNKNOWN', message: SPEC_ERRORS.UNKNOWN.message, detail: {} }] }, headers: {}, internal: true };
}
