// Parallel UploadPart with a bound on parts in flight. Shared by the one-shot multipart path (putBlob of a large
// blob) and staged uploads (a registry session streaming parts while its bytes still arrive), so both have the same
// memory bound (concurrency × part size) and the same "one failed part cancels the others" rule. Integrity of each
// part on the wire comes from SigV4: a Buffer body is signed with its sha256 (x-amz-content-sha256), which S3 and
// RGW check, so no Content-MD5 is computed (MD5 cost more CPU than anything else on the push path).

export interface CompletedPart {
  ETag: string;
  PartNumber: number;
}

/** Sends one part (with its retries) and returns its ETag. `signal` fires when another part failed. */
export type SendPart = (partNumber: number, body: Buffer, signal: AbortSignal) => Promise<string>;

export class PartUploader {
  /** Bytes handed to add() so far. */
  bytes = 0;
  private readonly done: CompletedPart[] = [];
  private readonly inflight = new Set<Promise<void>>();
  private readonly controller = new AbortController();
  private readonly signal: AbortSignal;
  private numbered = 0;
  private failure: Error | undefined;
  /** Buffers of finished parts, handed out again by buffer(). */
  private readonly spare: Buffer[] = [];
  /** Buffers that buffer() handed out: only those are recycled (a caller's own buffers are left alone). */
  private readonly mine = new WeakSet<Buffer>();

  constructor(
    private readonly send: SendPart,
    private readonly concurrency: number,
    private readonly partSize: number,
    outer?: AbortSignal,
    /**
     * Parts another process already sent to the same multipart upload (a registry session continued on another
     * instance): numbering continues after them and `bytes` counts them. Their ETags are not known here; finish()
     * returns only the parts of this uploader.
     */
    resume?: { parts: number; bytes: number },
  ) {
    this.signal = outer ? AbortSignal.any([outer, this.controller.signal]) : this.controller.signal;
    this.numbered = resume?.parts ?? 0;
    this.bytes = resume?.bytes ?? 0;
  }

  get parts(): number {
    return this.numbered;
  }

  get aborted(): boolean {
    return this.signal.aborted;
  }

  /** Throws the first part failure, if any. */
  check(): void {
    if (this.failure) throw this.failure;
  }

  /**
   * A part-sized buffer to fill: one of a finished part when there is one. Reusing them keeps memory at
   * (concurrency + 1) parts for the whole upload, instead of whatever V8 has not collected yet (8 MiB buffers live
   * outside the JS heap, and a young-generation GC does not look at how much external memory they pin).
   */
  buffer(): Buffer {
    const reused = this.spare.pop();
    if (reused) return reused;
    const fresh = Buffer.allocUnsafe(this.partSize);
    this.mine.add(fresh);
    return fresh;
  }

  /** Waits until fewer than `concurrency` parts are in flight (backpressure), then starts `body` as the next part. */
  async add(body: Buffer): Promise<void> {
    while (this.inflight.size >= this.concurrency) await Promise.race(this.inflight);
    this.check();
    const n = ++this.numbered;
    this.bytes += body.length;
    const p: Promise<void> = this.send(n, body, this.signal)
      .then((etag) => {
        this.done.push({ ETag: etag, PartNumber: n });
        // The request is answered, so its body is no longer read: the buffer may carry another part.
        if (this.mine.has(body) && this.spare.length < this.concurrency) this.spare.push(body);
      })
      .catch((err: unknown) => {
        this.failure ??= err instanceof Error ? err : new Error(String(err));
        this.controller.abort(err);
      })
      .finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }

  /** Waits for every part; returns them in order, ready for CompleteMultipartUpload. */
  async finish(): Promise<CompletedPart[]> {
    await Promise.all([...this.inflight]);
    this.check();
    return [...this.done].sort((a, b) => a.PartNumber - b.PartNumber);
  }

  /** Cancels the parts in flight and waits until they settled (before aborting the multipart upload). */
  async cancel(reason?: unknown): Promise<void> {
    this.controller.abort(reason);
    await Promise.allSettled([...this.inflight]);
  }
}
