// Sends a growing upload spool to the store while the client is still sending, so a large push costs about
// max(receive, upload) instead of receive + upload. Only whole parts already on disk are read and sent; the store
// keeps them as a staged blob (S3: a multipart upload at a temporary key) that becomes visible only after the
// session's digest is verified. Whenever in doubt — a chunk rolled back, a part failing, a blob too big to stage —
// the streamer gives up and the commit uploads from the spool as before: correctness never depends on it.
import { open, type FileHandle } from 'node:fs/promises';
import type { BlobStore, PutOutcome, StagedBlob } from '../store/contract.js';
import { log } from '@transship/core/log';

export class SpoolStreamer {
  private stage: Promise<StagedBlob> | undefined;
  private file: FileHandle | undefined;
  /** Bytes of the spool handed to the store as parts. */
  private sent = 0;
  /** Bytes of the spool known to be on disk. */
  private available = 0;
  private pumping: Promise<void> | undefined;
  private dead = false;

  constructor(
    private readonly store: Required<Pick<BlobStore, 'stageBlob'>>,
    private readonly path: string,
    /** Below this many bytes nothing is staged: one PUT at commit is cheaper than a multipart upload. */
    private readonly startAt: number,
    /** The session's signal: removing the session cancels parts in flight. */
    private readonly signal: AbortSignal,
  ) {}

  get active(): boolean {
    return this.stage !== undefined && !this.dead;
  }

  /** `bytes` of the spool are on disk now: start or continue sending whole parts in the background. */
  notify(bytes: number): void {
    if (this.dead || bytes <= this.available) return;
    this.available = bytes;
    if (this.available < this.startAt || this.pumping) return;
    this.pumping = this.pump()
      .catch((err: unknown) => {
        if (!this.signal.aborted) log.warn({ err, spool: this.path }, 'streaming an upload to the store failed; it will be uploaded from the spool at commit');
        this.dead = true;
      })
      .finally(() => {
        this.pumping = undefined;
      });
  }

  private async pump(): Promise<void> {
    const stage = await (this.stage ??= this.store.stageBlob({ signal: this.signal }));
    while (!this.dead && this.sent + stage.partSize <= this.available) {
      if (this.sent + stage.partSize > stage.maxBytes) {
        this.dead = true; // too big for this kind of stage; commit falls back to putBlob
        return;
      }
      await this.sendPart(stage, stage.partSize);
    }
  }

  private async sendPart(stage: StagedBlob, length: number): Promise<void> {
    const file = (this.file ??= await open(this.path, 'r'));
    const buf = stage.buffer();
    const { bytesRead } = await file.read(buf, 0, length, this.sent);
    if (bytesRead !== length) throw new Error(`spool ${this.path} has ${this.sent + bytesRead} bytes, expected at least ${this.sent + length}`);
    // The last part is shorter: a view of the buffer (which is then not recycled — PartUploader only takes back whole buffers it handed out).
    await stage.addPart(length === buf.length ? buf : buf.subarray(0, length));
    this.sent += length;
  }

  /**
   * A chunk failed and the spool was truncated to `size`. Parts already sent may hold bytes that no longer exist,
   * so the staged copy is dropped (rare: a client that disconnects mid-chunk) and the session no longer streams.
   */
  async rollback(size: number): Promise<void> {
    if (!this.stage && !this.pumping) {
      this.available = Math.min(this.available, size);
      return;
    }
    await this.abandon();
  }

  /**
   * Sends the tail and makes the staged bytes the blob `digest` (verified by the caller). Returns undefined when
   * nothing usable was staged: the caller then uploads from the spool.
   */
  async commit(digest: string, size: number, signal: AbortSignal | undefined): Promise<PutOutcome | undefined> {
    await this.pumping;
    if (!this.stage || this.dead) {
      await this.abandon();
      return undefined;
    }
    try {
      const stage = await this.stage;
      if (size > stage.maxBytes || this.sent > size) {
        await this.abandon();
        return undefined;
      }
      while (this.sent < size) await this.sendPart(stage, Math.min(stage.partSize, size - this.sent));
      const out = await stage.commit(digest, size, { signal });
      await this.close();
      return out;
    } catch (err) {
      await this.abandon();
      if (signal?.aborted || this.signal.aborted) throw err;
      log.warn({ err, digest }, 'committing a streamed upload failed; uploading it from the spool instead');
      return undefined;
    }
  }

  /** Drops whatever was staged (session removed, rolled back, or given up). Idempotent. */
  async abandon(): Promise<void> {
    this.dead = true;
    await this.pumping;
    const stage = this.stage;
    this.stage = undefined;
    if (stage) await stage.then((s) => s.abort()).catch(() => undefined);
    await this.close();
  }

  private async close(): Promise<void> {
    const f = this.file;
    this.file = undefined;
    await f?.close().catch(() => undefined);
  }
}
