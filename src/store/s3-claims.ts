// Claims on large digests (S3 store): who may move a large blob's bytes.
//
// Why it works this way: RGW does not honour `If-None-Match` on CompleteMultipartUpload, so two writers of the same
// large blob would both transfer it. Before moving bytes a writer claims the digest with a conditional PUT of a small
// marker (`claims/<alg>/<hex>`, keys.ts) holding a lease. Losers wait for the blob to appear or for the lease to
// expire (a crashed winner therefore blocks others for at most one lease). Cost: two small requests per large blob,
// in exchange for never transferring a large blob twice.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { cancelledError, throwIfAborted } from '../core/errors.js';
import type { Digest } from '../core/digest.js';
import { log } from '../telemetry/log.js';
import type { BlobInfo } from './contract.js';
import { claimKey } from './keys.js';
import type { S3Objects } from './s3-objects.js';

const MiB = 1024 * 1024;

export class S3Claims {
  private readonly owner = randomUUID();

  constructor(
    private readonly objects: S3Objects,
    private readonly statBlob: (digest: string, signal: AbortSignal | undefined) => Promise<BlobInfo | undefined>,
    private readonly leaseMs: number,
  ) {}

  /** Claims a large digest. Returns the blob's info instead when it appeared meanwhile. */
  async claim(d: Digest, size: number, signal: AbortSignal | undefined): Promise<'claimed' | BlobInfo> {
    const key = claimKey(d.value);
    const leaseMs = this.leaseMs + Math.ceil(size / (5 * MiB)) * 1000;
    for (;;) {
      throwIfAborted(signal);
      const body = JSON.stringify({ owner: this.owner, expiresAt: Date.now() + leaseMs });
      if (await this.objects.putIfAbsent(key, body, { signal })) {
        // The previous holder may have completed the blob and released the claim just before we took it.
        const done = await this.statBlob(d.value, signal);
        if (!done) return 'claimed';
        await this.release(d);
        return done;
      }
      const done = await this.statBlob(d.value, signal);
      if (done) return done;
      const holder = await this.objects.get(key, { signal });
      const expiresAt = holder ? Number((JSON.parse(holder) as { expiresAt?: unknown }).expiresAt) : 0;
      if (!Number.isFinite(expiresAt) || expiresAt <= Date.now()) {
        log.warn({ store: this.objects.name, digest: d.value }, 'claim lease expired; taking over');
        await this.objects.delete(key, { signal });
        continue;
      }
      try {
        await sleep(Math.min(1000, expiresAt - Date.now()), undefined, signal ? { signal } : {});
      } catch {
        throw cancelledError(signal);
      }
    }
  }

  /** Releases on its own short deadline (it must run after a cancel); a failure only delays others by the lease. */
  async release(d: Digest): Promise<void> {
    await this.objects.delete(claimKey(d.value), { signal: AbortSignal.timeout(15_000) }).catch((err: unknown) =>
      log.warn({ store: this.objects.name, digest: d.value, err }, 'could not release claim; it expires with its lease'));
  }
}
