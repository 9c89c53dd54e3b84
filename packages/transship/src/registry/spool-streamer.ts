// Sends a growing upload spool to the store while the client is still sending, so a large push costs about
// max(receive, upload) instead of receive + upload. Only whole parts already on disk are read and sent; the store
// keeps them as a staged blob (S3: a multipart upload at a temporary key) that becomes visible only after the
// session's digest is verified. Whenever in doubt — a chunk rolled back, a part failing, a blob too big to stage —
// the streamer gives up and the commit uploads from the spool as before: correctness never depends on it.
import { open, type FileHandle } from 'node:fs/promises';
import type { BlobStore, PutOutcome, StagedBlob, StagedState } from '../store/contract.js';
import { log } from '@transship/core/log';

/** S3's smallest part (all but the last): a stage is not started for fewer bytes than this. */
const S3_MIN_PART_BYTES = 5 * 1024 * 1024;

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
    private startAt: number,
    /** The session's signal: removing the session cancels parts in flight. */
    private readonly signal: AbortSignal,
    /**
     * Shared sessions: the stage is named after the session (so other instances find its tail) and may continue one
     * another instance checkpointed — then the spool holds only the bytes after `resume.bytes`.
     */
    private readonly shared?: { id: string; resume?: StagedState | undefined },
  ) {
    if (shared?.resume) {
      this.stage = this.open();
      this.stage.catch(() => undefined); // observed where it is awaited; this only keeps a failure from being unhandled
    }
  }

  get active(): boolean {
    return this.stage !== undefined && !this.dead;
  }

  /** Bytes of the blob staged by other instances before this spool's first byte. */
  private get base(): number {
    return this.shared?.resume?.bytes ?? 0;
  }

  private open(): Promise<StagedBlob> {
    return this.store.stageBlob({ signal: this.signal, id: this.shared?.id, resume: this.shared?.resume });
  }

  /**
   * Waits for every part sent so far and says where the stage stands: undefined when nothing is staged (the whole
   * spool is the tail), else the stage's state and how many spool bytes it holds. Throws when streaming failed on a
   * session that continued another instance's stage (nothing else holds its first bytes).
   */
  async checkpoint(): Promise<{ staged: StagedState; spoolBytes: number } | undefined> {
    await this.pumping;
    if (this.dead || !this.stage) {
      if (this.shared?.resume) throw new Error(`streaming the upload to the store failed after it continued staged upload ${this.shared.resume.uploadId}`);
      return undefined;
    }
    const staged = await (await this.stage).checkpoint();
    return { staged, spoolBytes: this.sent };
  }

  /**
   * Stage every whole part from now on, whatever the threshold: a shared session sent in chunks checkpoints after
   * each one, and what is not in a part then has to be written as its tail — keep that below one part.
   */
  stageFromFirstPart(): void {
    this.startAt = Math.min(this.startAt, S3_MIN_PART_BYTES); // no stage before there can be a part to put in it
    this.kick();
  }

  /** The stage's id once one exists (S3 multipart upload id). */
  async uploadId(): Promise<string | undefined> {
    return this.stage?.then((s) => s.uploadId, () => undefined);
  }

  /** `bytes` of the spool are on disk now: start or continue sending whole parts in the background. */
  notify(bytes: number): void {
    if (this.dead || bytes <= this.available) return;
    this.available = bytes;
    this.kick();
  }

  /** Starts the pump when there is enough on disk and it is not running (it re-reads `available` as it goes). */
  private kick(): void {
    if (this.dead || this.available < this.startAt || this.pumping) return;
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
    const stage = await (this.stage ??= this.open());
    while (!this.dead && this.sent + stage.partSize <= this.available) {
      if (this.base + this.sent + stage.partSize > stage.maxBytes) {
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
  async commit(digest: string, size: number, signal: AbortSignal | undefined, verify: boolean | { etags: string } = false): Promise<PutOutcome | undefined> {
    await this.pumping;
    if (this.base > 0 && !verify) throw new Error('a session that continued another instance\'s stage must be verified at commit');
    if (!this.stage || this.dead) {
      await this.abandon();
      return undefined;
    }
    try {
      const stage = await this.stage;
      if (size > stage.maxBytes || this.base + this.sent > size) {
        await this.abandon();
        return undefined;
      }
      const spoolSize = size - this.base;
      while (this.sent < spoolSize) await this.sendPart(stage, Math.min(stage.partSize, spoolSize - this.sent));
      const out = await stage.commit(digest, size, { signal, verify });
      await this.close();
      return out;
    } catch (err) {
      await this.abandon();
      // A verified commit has no spool to fall back on (the caller decides), and its digest mismatch is the answer.
      if (signal?.aborted || this.signal.aborted || verify) throw err;
      log.warn({ err, digest }, 'committing a streamed upload failed; uploading it from the spool instead');
      return undefined;
    }
  }

  /**
   * Lets go of the stage without discarding what was checkpointed (the session continues on another instance, or
   * may): parts in flight are cancelled. Idempotent.
   */
  async release(): Promise<void> {
    this.dead = true;
    await this.pumping;
    const stage = this.stage;
    this.stage = undefined;
    if (stage) await stage.then((s) => s.release()).catch(() => undefined);
    await this.close();
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
