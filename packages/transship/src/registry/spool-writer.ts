// Appends an upload's bytes to its spool file in ~1 MiB writes. A socket delivers a body in 64 KiB pieces, and
// fs.WriteStream issues one write per piece whenever the previous one has finished — which on a page-cache write
// is almost always — so a 256 MiB push cost ~4,000 trips through libuv's thread pool, each waking a worker and then
// the event loop. Wakeups are expensive on the small VMs registries run on; gathering pieces into one writev per
// MiB cut the spool's share of a push's CPU (see bench/RESULTS.md). The pieces are the HTTP parser's own fresh
// buffers, so holding on to them until the flush is safe; at most `flushBytes` (+ one piece) wait in memory.
import { open, type FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';

const DEFAULT_FLUSH_BYTES = 1024 * 1024;

export class SpoolWriter extends Writable {
  /** Bytes on disk (flushed), as fs.WriteStream's `bytesWritten`. */
  bytesWritten = 0;
  private file: FileHandle | undefined;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** The write in progress: closing the file under it would lose the write's outcome (see _destroy). */
  private inflight: Promise<void> | undefined;

  constructor(
    private readonly path: string,
    private readonly flushBytes = DEFAULT_FLUSH_BYTES,
  ) {
    super({ highWaterMark: flushBytes });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes < this.flushBytes) {
      cb();
      return;
    }
    this.inflight = this.flush();
    this.inflight.then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.inflight = this.flush();
    this.inflight.then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // Unflushed pieces are dropped: a failed chunk is rolled back to its start anyway (uploads.ts), and that
    // truncation waits for 'close' — so a write still in flight must land before the file is closed.
    this.pending = [];
    const settle = this.inflight?.catch(() => undefined) ?? Promise.resolve();
    void settle.then(async () => {
      const file = this.file;
      this.file = undefined;
      await file?.close();
    }).then(() => cb(err), (closeErr: Error) => cb(err ?? closeErr));
  }

  private async flush(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const buffers = this.pending;
    const bytes = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    const file = (this.file ??= await open(this.path, 'a'));
    let done = 0;
    // writev may write less than asked (rare for a regular file): continue with what is left.
    while (done < bytes) {
      const { bytesWritten } = await file.writev(done === 0 ? buffers : remainder(buffers, done));
      if (bytesWritten <= 0) throw new Error(`spool ${this.path}: writev wrote nothing`);
      done += bytesWritten;
    }
    this.bytesWritten += bytes;
  }
}

/** The bytes of `buffers` after the first `skip`, as views. */
function remainder(buffers: Buffer[], skip: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of buffers) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}
