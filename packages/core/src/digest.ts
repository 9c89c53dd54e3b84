// Content digests as the OCI image spec defines them: `algorithm:encoded`. sha256 is what we write; sha512 is
// accepted when reading. Parsing is strict on purpose: a digest becomes a storage key and a file name, so anything
// outside the grammar is rejected before it can name a path.
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { TransshipError } from './errors.js';

export type Algorithm = 'sha256' | 'sha512';

const HEX_LENGTH: Record<Algorithm, number> = { sha256: 64, sha512: 128 };
const DIGEST_RE = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

export interface Digest {
  readonly algorithm: Algorithm;
  readonly hex: string;
  /** The canonical string form, `sha256:<64 hex>`. */
  readonly value: string;
}

export function parseDigest(input: string): Digest {
  if (typeof input !== 'string' || input.length > 200) {
    throw new TransshipError('TS_INVALID_DIGEST', `invalid digest: expected "sha256:<64 hex characters>"`, { details: { digest: String(input).slice(0, 80) } });
  }
  const m = DIGEST_RE.exec(input);
  if (!m) throw new TransshipError('TS_INVALID_DIGEST', `invalid digest "${input}": expected "sha256:<64 hex characters>"`, { details: { digest: input } });
  const algorithm = m[1] as string;
  const hex = m[2] as string;
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new TransshipError('TS_UNSUPPORTED_ALGORITHM', `unsupported digest algorithm "${algorithm}" in "${input}": use sha256 (or sha512)`, { details: { digest: input } });
  }
  if (hex.length !== HEX_LENGTH[algorithm] || !/^[a-f0-9]+$/.test(hex)) {
    throw new TransshipError('TS_INVALID_DIGEST', `invalid digest "${input}": ${algorithm} needs ${HEX_LENGTH[algorithm]} lowercase hex characters`, { details: { digest: input } });
  }
  return { algorithm, hex, value: `${algorithm}:${hex}` };
}

export function isDigest(input: string): boolean {
  try {
    parseDigest(input);
    return true;
  } catch {
    return false;
  }
}

export function digestOf(data: Uint8Array | string, algorithm: Algorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

/**
 * A pass-through stream that hashes what flows through it and, at the end, fails the stream with
 * TS_DIGEST_MISMATCH / TS_SIZE_MISMATCH if the bytes are not what was promised. Because the error is raised in
 * `flush`, a consumer that only commits on a clean end (rename, CompleteMultipartUpload…) never commits wrong bytes.
 */
export class VerifyingStream extends Transform {
  readonly expected: Digest | undefined;
  readonly expectedSize: number | undefined;
  private readonly hash: Hash;
  bytes = 0;
  private result: string | undefined;

  constructor(options: { expected?: string | Digest; size?: number; algorithm?: Algorithm }) {
    super();
    this.expected = typeof options.expected === 'string' ? parseDigest(options.expected) : options.expected;
    this.expectedSize = options.size;
    this.hash = createHash(this.expected?.algorithm ?? options.algorithm ?? 'sha256');
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.expectedSize !== undefined && this.bytes > this.expectedSize) {
      cb(sizeMismatch(this.expected?.value, this.expectedSize, this.bytes, 'more'));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    const algorithm = this.expected?.algorithm ?? 'sha256';
    this.result = `${algorithm}:${this.hash.digest('hex')}`;
    if (this.expectedSize !== undefined && this.bytes !== this.expectedSize) {
      cb(sizeMismatch(this.expected?.value, this.expectedSize, this.bytes, 'fewer'));
      return;
    }
    if (this.expected && this.result !== this.expected.value) {
      cb(digestMismatch(this.expected.value, this.result));
      return;
    }
    cb();
  }

  /** The computed digest; available after the stream ended. */
  get digest(): string {
    if (this.result === undefined) throw new TransshipError('TS_INTERNAL', 'digest read before the stream ended');
    return this.result;
  }
}

export function digestMismatch(expected: string, actual: string): TransshipError {
  return new TransshipError('TS_DIGEST_MISMATCH', `content does not match its digest: expected ${expected}, got ${actual}; nothing was stored`, {
    details: { digest: expected, actual },
  });
}

export function sizeMismatch(digest: string | undefined, expected: number, actual: number, which: 'more' | 'fewer'): TransshipError {
  return new TransshipError('TS_SIZE_MISMATCH', `content of ${digest ?? 'blob'} has ${which} bytes than declared (expected ${expected}, got ${which === 'more' ? `more than ${expected}` : actual}); nothing was stored`, {
    details: { digest, expectedSize: expected, actualSize: actual },
  });
}
