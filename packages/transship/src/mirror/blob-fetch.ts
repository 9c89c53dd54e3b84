// One upstream blob fetch, streamed to any number of clients while it is stored.
//
// Why a spool file and not a tee: a tee ties the upstream connection to the slowest reader (a stalled client would
// hold the only fetch, and everyone coalesced on it), and a reader that arrives mid-stream could not start from byte
// 0. Instead the upstream body is written to a local spool file as fast as it comes, hashed on the way; every reader
// (each client's response, and the store write) follows the file at its own pace from byte 0. So the first byte
// reaches the first client as soon as the first chunk is on disk, a waiter that joins later catches up from disk,
// and the upstream is read once.
//
// Nothing unverified becomes visible: a reader gets its end-of-stream only after the whole body hashed to the digest
// (and matched the declared size); until then a whole-blob reader is held one byte short of the end, so a client
// that was sent Content-Length cannot take a corrupted body for a complete one. On a mismatch every reader fails
// instead — a client sees a broken body, which is what it must see — and the store write, which reads the same file
// and is itself verified by putBlob, is aborted.
// The file is removed when the fetch is over and its last reader is done (unlinking under an open reader is safe).
import { createHash, randomUUID } from 'node:crypto';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { digestMismatch, parseDigest, sizeMismatch } from '@transship/core/digest';
import { TransshipError } from '@transship/core/errors';

/** Upstream bytes are gathered into writes of about this size (fewer syscalls; readers see progress this often). */
const WRITE_BYTES = 256 * 1024;
/** A reader's chunk. */
const READ_BYTES = 1024 * 1024;

export interface BlobFetchOptions {
  digest: string;
  /** From the upstream's Content-Length; the body must match it. */
  size: number | undefined;
  /** The upstream body (unverified). */
  body: Readable;
  dir: string;
  /** Largest blob accepted when the upstream sent no size (serve.maxBodyBytes). */
  maxBytes: number;
  /** Each chunk received (metrics). */
  onBytes?: ((n: number) => void) | undefined;
}

export class BlobFetch {
  readonly digest: string;
  /** The declared size, else the verified one once known. */
  size: number | undefined;
  /** Bytes on disk, readable by readers. */
  private written = 0;
  private state: 'running' | 'verified' | 'failed' = 'running';
  private error: Error | undefined;
  private wake: Array<() => void> = [];
  private readers = 0;
  private finished = false;
  private released: Promise<void> | undefined;
  /** Resolves when the body is on disk and verified; rejects when it is not the blob. */
  readonly verified: Promise<void>;

  private constructor(
    private readonly file: FileHandle,
    readonly path: string,
    opts: BlobFetchOptions,
  ) {
    this.digest = opts.digest;
    this.size = opts.size;
    this.verified = this.pump(opts);
    // Readers and the store see the outcome through their own streams; this copy must not be an unhandled rejection.
    this.verified.catch(() => undefined);
  }

  /** Opens the spool and starts reading the upstream body into it. */
  static async start(opts: BlobFetchOptions): Promise<BlobFetch> {
    const path = join(opts.dir, `.mirror-${process.pid}-${randomUUID()}`);
    const file = await open(path, 'w+', 0o600).catch((err: unknown) => {
      opts.body.destroy();
      throw err;
    });
    return new BlobFetch(file, path, opts);
  }

  private async pump(opts: BlobFetchOptions): Promise<void> {
    const expected = parseDigest(opts.digest);
    const hash = createHash(expected.algorithm);
    const limit = opts.size ?? opts.maxBytes;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let received = 0;
    const flush = async (): Promise<void> => {
      if (!pendingBytes) return;
      const buf = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      let off = 0;
      while (off < buf.length) {
        const { bytesWritten } = await this.file.write(buf, off, buf.length - off, this.written + off);
        off += bytesWritten;
      }
      this.written += buf.length;
      this.notify();
    };
    try {
      for await (const chunk of opts.body) {
        const b = chunk as Buffer;
        received += b.length;
        if (received > limit) {
          opts.body.destroy();
          throw opts.size !== undefined
            ? sizeMismatch(opts.digest, opts.size, received, 'more')
            : new TransshipError('TS_SIZE_MISMATCH', `upstream blob ${opts.digest} is larger than ${limit} bytes`, { details: { digest: opts.digest, limit } });
        }
        opts.onBytes?.(b.length);
        hash.update(b);
        pending.push(b);
        pendingBytes += b.length;
        // The first chunk goes out at once (time to first byte); later ones in larger writes.
        if (pendingBytes >= WRITE_BYTES || this.written === 0) await flush();
      }
      await flush();
      if (opts.size !== undefined && received !== opts.size) throw sizeMismatch(opts.digest, opts.size, received, 'fewer');
      const actual = `${expected.algorithm}:${hash.digest('hex')}`;
      if (actual !== expected.value) throw digestMismatch(expected.value, actual);
      this.size = received;
      this.state = 'verified';
      this.notify();
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
      throw err;
    }
  }

  private fail(err: Error): void {
    if (this.state !== 'running') return;
    this.state = 'failed';
    this.error = err;
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = [];
    for (const w of wake) w();
  }

  private changed(): Promise<void> {
    return new Promise((resolve) => this.wake.push(resolve));
  }

  /**
   * A stream of the blob from byte `start` (to `end` inclusive) that follows the spool as it grows and ends only after
   * the whole blob was verified. Fails with the fetch's error when the upstream body is not the blob.
   */
  reader(start = 0, end?: number): Readable {
    if (this.released) throw new TransshipError('TS_BLOB_UNKNOWN', `mirror fetch of ${this.digest} is over; read the store`);
    this.readers++;
    let pos = start;
    const whole = start === 0 && end === undefined;
    let closed = false;
    const pull = async (stream: Readable): Promise<void> => {
      for (;;) {
        if (closed) return;
        if (this.state === 'failed') {
          stream.destroy(this.error);
          return;
        }
        // Until the verdict, a whole-blob reader gets all but the last byte: with Content-Length sent, the last byte
        // is what would make a corrupted body look complete. A range reader waits for the verdict altogether (its
        // client could not tell a wrong range from a right one).
        const limit = this.state === 'verified' ? this.written : whole ? Math.min(this.written, (this.size ?? Number.POSITIVE_INFINITY) - 1) : pos;
        const stop = end === undefined ? limit : Math.min(limit, end + 1);
        if (pos < stop) {
          const buf = Buffer.allocUnsafe(Math.min(READ_BYTES, stop - pos));
          const { bytesRead } = await this.file.read(buf, 0, buf.length, pos);
          pos += bytesRead;
          stream.push(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
          return;
        }
        if (this.state === 'verified' && (end === undefined || pos > end || pos >= this.written)) {
          stream.push(null);
          return;
        }
        await this.changed();
      }
    };
    return new Readable({
      highWaterMark: READ_BYTES,
      read() {
        pull(this).catch((err: unknown) => this.destroy(err as Error));
      },
      destroy: (err, cb) => {
        closed = true;
        this.readers--;
        void this.maybeRelease();
        cb(err);
      },
    });
  }

  /** The fetch is over (stored or failed): the spool goes once its last reader is done. */
  finish(): Promise<void> {
    this.finished = true;
    return this.maybeRelease() ?? Promise.resolve();
  }

  private maybeRelease(): Promise<void> | undefined {
    if (!this.finished || this.readers > 0) return this.released;
    this.released ??= (async () => {
      await this.file.close().catch(() => undefined);
      await unlink(this.path).catch(() => undefined);
    })();
    return this.released;
  }
}
