// A blob read that survives a connection lost mid-body. A blob key holds the same bytes forever (content
// addressing), so when the stream from the backend breaks after N bytes, a ranged read from offset N returns
// exactly the bytes that are missing: the reader splices it on and the consumer (a registry client, a lazy
// cross-region read, a copy) never notices, where before it got a truncated body ("unexpected EOF").
//
// The whole pump — first stream, then each ranged re-read — runs inside ONE call of the store's observed retry
// (passed in as `run`), so resumes are bounded by the store's attempts, budget and cancellation, and are counted in
// upload_retry_total like every other retry. Only errors the retry classifier calls transient resume; a body that
// just ends early is a TS_NETWORK (transient) too.
//
// Integrity across the splice: when the read covers the whole blob and its digest is known, the bytes passed on are
// hashed as they go and the stream fails with TS_DIGEST_MISMATCH instead of ending cleanly if they do not match, so
// a splice can never hand out a wrong blob silently. Partial ranges cannot be verified (no digest covers them).
import { PassThrough, type Readable } from 'node:stream';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { parseDigest } from '@transship/core/digest';
import { TransshipError, throwIfAborted } from '@transship/core/errors';
import type { ByteRange } from './contract.js';

export interface ResumingReadOptions {
  /** The stream already opened for `range` (its response head is what the caller answered with). */
  first: Readable;
  /** The bytes `first` delivers (inclusive), in blob coordinates. */
  range: ByteRange;
  /** The blob's digest; when `range` is the whole blob (`size` given), the spliced bytes are verified against it. */
  digest: string;
  /** The blob's full size, when known: a read of `0..size-1` is verified. */
  size?: number | undefined;
  /** Opens the rest: a ranged read of the same key. Errors are the store's own (mapped) errors. */
  reopen: (range: ByteRange, signal: AbortSignal) => Promise<Readable>;
  /** Runs `op` under the store's observed retry (attempts, budget, metrics, spans); `op` is re-run on transient errors. */
  run: (op: (signal: AbortSignal) => Promise<void>, signal: AbortSignal) => Promise<void>;
  signal?: AbortSignal | undefined;
}

export function resumingRead(opts: ResumingReadOptions): Readable {
  const { range } = opts;
  const total = range.end - range.start + 1;
  const out = new PassThrough();
  // The consumer going away (a client that disconnected, a pipeline torn down) ends the pump and any re-read.
  const gone = new AbortController();
  out.once('close', () => gone.abort());
  const signal = opts.signal ? AbortSignal.any([opts.signal, gone.signal]) : gone.signal;
  const d = parseDigest(opts.digest);
  const hash = opts.size !== undefined && range.start === 0 && range.end === opts.size - 1 ? createHash(d.algorithm) : undefined;
  let delivered = 0;
  let first: Readable | undefined = opts.first;

  const pump = async (attemptSignal: AbortSignal): Promise<void> => {
    const stream = first ?? (await opts.reopen({ start: range.start + delivered, end: range.end }, attemptSignal));
    first = undefined;
    const onAbort = () => stream.destroy();
    attemptSignal.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        // A backend that sends more than it was asked for is not the blob we know: never pass the excess on.
        const room = total - delivered;
        const piece = chunk.length > room ? chunk.subarray(0, room) : chunk;
        delivered += piece.length;
        hash?.update(piece);
        if (!out.write(piece)) await once(out, 'drain', { signal: attemptSignal });
        if (delivered === total) break;
      }
    } finally {
      attemptSignal.removeEventListener('abort', onAbort);
      stream.destroy();
    }
    throwIfAborted(attemptSignal);
    if (delivered < total) {
      throw new TransshipError('TS_NETWORK', `blob ${d.value}: the stream ended after ${range.start + delivered} of bytes ${range.start}-${range.end}`, { details: { digest: d.value } });
    }
  };

  opts.run(pump, signal).then(
    () => {
      const actual = hash ? `${d.algorithm}:${hash.digest('hex')}` : undefined;
      if (actual !== undefined && actual !== d.value) {
        out.destroy(new TransshipError('TS_DIGEST_MISMATCH', `blob ${d.value}: the bytes read hash to ${actual}`, { details: { digest: d.value, actual } }));
      } else out.end();
    },
    (err: unknown) => out.destroy(err instanceof Error ? err : new Error(String(err))),
  );
  return out;
}
