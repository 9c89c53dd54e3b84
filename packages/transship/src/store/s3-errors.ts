// Maps AWS SDK / S3 errors onto the project's error table, so the retry classifier and the CLI see one vocabulary.
// S3 error names are checked first (they are precise), then HTTP status, then socket-level codes.
import { TransshipError, isTransshipError, isAbortError, cancelledError } from '@transship/core/errors';
import { parseRetryAfter } from '@transship/core/retry';

interface SdkErrorShape {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $response?: { headers?: Record<string, string | undefined> };
}

export function isS3NotFound(err: unknown): boolean {
  const e = err as SdkErrorShape;
  return e?.name === 'NotFound' || e?.name === 'NoSuchKey' || e?.$metadata?.httpStatusCode === 404 && e?.name !== 'NoSuchBucket';
}

export function isPreconditionFailed(err: unknown): boolean {
  const e = err as SdkErrorShape;
  return e?.name === 'PreconditionFailed' || e?.$metadata?.httpStatusCode === 412;
}

export function mapS3Error(err: unknown, context: { store: string; operation: string; key?: string; endpoint?: string | undefined }, signal?: AbortSignal): TransshipError {
  if (isTransshipError(err)) return err;
  if (signal?.aborted || isAbortError(err)) return cancelledError(signal);
  const e = err as SdkErrorShape;
  const status = e?.$metadata?.httpStatusCode;
  const name = e?.name ?? '';
  const where = `${context.operation} ${context.key ?? ''} on ${context.store}`.replace(/\s+/g, ' ');
  const details = { store: context.store, operation: context.operation, key: context.key, s3Code: name || undefined, status };
  const base = { cause: err, details, ...(status !== undefined ? { status } : {}) };
  const retryAfter = parseRetryAfter(e?.$response?.headers?.['retry-after']);
  switch (name) {
    case 'NoSuchBucket':
      return new TransshipError('TS_NO_SUCH_BUCKET', `${where}: the bucket does not exist; create it or fix the store reference`, base);
    case 'AccessDenied':
    case 'InvalidAccessKeyId':
    case 'SignatureDoesNotMatch':
    case 'AllAccessDisabled':
      return new TransshipError('TS_ACCESS_DENIED', `${where}: ${name} — check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy`, base);
    case 'SlowDown':
    case 'Throttling':
    case 'ThrottlingException':
      return new TransshipError('TS_THROTTLED', `${where}: backend asked to slow down (${name})`, { ...base, ...(retryAfter !== undefined ? { retryAfterMs: retryAfter } : {}) });
    case 'RequestTimeout':
    case 'TimeoutError':
      return new TransshipError('TS_TIMEOUT', `${where}: request timed out`, base);
    case 'InternalError':
    case 'ServiceUnavailable':
      return new TransshipError('TS_BACKEND_UNAVAILABLE', `${where}: ${name}`, base);
    case 'BadDigest':
    case 'XAmzContentSHA256Mismatch':
      return new TransshipError('TS_TRANSFER_CORRUPTED', `${where}: the body the server received does not match its signed checksum (${name}): damaged in transit`, base);
    case 'InvalidBucketName':
      return new TransshipError('TS_CONFIG_INVALID', `${where}: invalid bucket name`, base);
  }
  if (status === 401 || status === 403) return new TransshipError('TS_ACCESS_DENIED', `${where}: HTTP ${status} — check credentials`, base);
  if (status === 429 || status === 503) return new TransshipError('TS_THROTTLED', `${where}: HTTP ${status}`, { ...base, ...(retryAfter !== undefined ? { retryAfterMs: retryAfter } : {}) });
  if (status === 408) return new TransshipError('TS_TIMEOUT', `${where}: HTTP 408`, base);
  if (status !== undefined && status >= 500) return new TransshipError('TS_BACKEND_UNAVAILABLE', `${where}: HTTP ${status}`, base);
  const code = e?.code ?? '';
  const msg = e?.message ?? String(err);
  if (/^(ECONNRESET|EPIPE|ETIMEDOUT|ECONNABORTED|ERR_STREAM_PREMATURE_CLOSE|UND_ERR)/.test(code) || /socket hang up|ECONNRESET|EPIPE|premature close|other side closed/i.test(msg)) {
    return new TransshipError('TS_NETWORK', `${where}: connection failed (${code || msg.split('\n')[0]})`, base);
  }
  if (/^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH)$/.test(code) || /ECONNREFUSED|ENOTFOUND|EAI_AGAIN/.test(msg)) {
    return new TransshipError('TS_NETWORK', `${where}: cannot reach ${context.endpoint ?? 'the S3 endpoint'} (${code || msg.split('\n')[0]}); check the endpoint URL and that the service is up`, base);
  }
  if (status !== undefined && status >= 400) return new TransshipError('TS_BACKEND_REJECTED', `${where}: ${name || 'HTTP ' + status}: ${msg.split('\n')[0]}`, base);
  return new TransshipError('TS_INTERNAL', `${where}: ${name || code || 'error'}: ${msg.split('\n')[0]}`, base);
}
