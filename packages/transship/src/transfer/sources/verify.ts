// What every source serves is checked: a blob stream is wrapped so its bytes are hashed against the descriptor's
// digest and size while they flow, and a corrupted source fails with TS_DIGEST_MISMATCH / TS_SIZE_MISMATCH at the
// end of the stream (before a destination commits). Manifests are small and read whole, so they are checked
// before they are returned.
import { addAbortSignal, pipeline, type Readable } from 'node:stream';
import { digestOf, digestMismatch, parseDigest, sizeMismatch, VerifyingStream } from '@transship/core/digest';
import { cancelledError, throwIfAborted, TransshipError } from '@transship/core/errors';
import type { Descriptor } from '../types.js';

/** Manifests and indexes larger than this are refused (distribution uses the same bound). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Small JSON documents in layouts and archives (index.json, manifest.json, configs). */
export const MAX_METADATA_BYTES = 16 * 1024 * 1024;

/** Wraps `raw` so it fails unless its bytes match `desc`; destroys `raw` when the consumer stops or the signal fires. */
export function verifiedStream(raw: Readable, desc: Descriptor, signal?: AbortSignal, callerVerifies = false): Readable {
  if (callerVerifies) return abortable(raw, signal);
  const verifier = new VerifyingStream({ expected: desc.digest, size: desc.size });
  // pipeline propagates errors both ways and destroys the file stream when the consumer destroys the verifier.
  pipeline(raw, verifier, () => undefined);
  return abortable(verifier, signal);
}

/**
 * Destroys `stream` when `signal` fires. The stream is handed to a consumer that may not have attached to it yet
 * (a destination still preparing its write when a sibling blob fails and the copy is cancelled): the abort's
 * 'error' would then have no listener and crash the process. A no-op listener keeps it an ordinary error — every
 * consumer that does attach (pipeline, for await) still receives it.
 */
function abortable(stream: Readable, signal: AbortSignal | undefined): Readable {
  if (!signal) return stream;
  addAbortSignal(signal, stream);
  stream.on('error', () => undefined);
  return stream;
}

/** Checks manifest bytes against their descriptor. */
export function checkBytes(bytes: Buffer, desc: Descriptor): Buffer {
  const expected = parseDigest(desc.digest);
  if (bytes.length !== desc.size) throw sizeMismatch(desc.digest, desc.size, bytes.length, bytes.length > desc.size ? 'more' : 'fewer');
  const actual = digestOf(bytes, expected.algorithm);
  if (actual !== expected.value) throw digestMismatch(expected.value, actual);
  return bytes;
}

/** Reads a whole (small) stream, refusing more than `limit` bytes so a hostile size cannot exhaust memory. */
export async function readAll(stream: Readable, limit: number, what: string, signal?: AbortSignal): Promise<Buffer> {
  throwIfAborted(signal);
  const chunks: Buffer[] = [];
  let total = 0;
  const onAbort = (): void => {
    stream.destroy(cancelledError(signal));
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const chunk of stream) {
      const buf = chunk as Buffer;
      total += buf.length;
      if (total > limit) {
        stream.destroy();
        throw new TransshipError('TS_MANIFEST_INVALID', `${what} is larger than ${limit} bytes; refusing to read it`, { details: { limit } });
      }
      chunks.push(buf);
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  throwIfAborted(signal);
  return Buffer.concat(chunks, total);
}
