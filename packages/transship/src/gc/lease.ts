// At most one GC pass per store at a time, across instances, without a database: numbered lease objects
// `_gc/lease/<epoch>` (docs/gc.md "The lease"). Every write is a put-if-absent of a *new* epoch, so nothing is ever
// overwritten and no conditional delete (which RGW 16 lacks) is needed:
// - take: list the prefix; if the newest epoch is someone else's and unexpired (with the clock-skew allowance), the
//   store is busy; otherwise write newest+1 — of several contenders exactly one put-if-absent succeeds;
// - renew: write current+1 while still valid; a 412 means someone judged us expired and took over: we stop;
// - release: write current+1 with expiresAt 0, so the next runner need not wait for the expiry;
// - a crashed holder's epoch simply expires; the next holder deletes the epochs before its own.
// The lease saves duplicate work; it is not what makes deleting safe (two passes at once both follow the freshness
// rule, and deleting twice is harmless), so a lost renewal is an inconvenience, never a loss.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { errorSummary } from '@transship/core/errors';
import { GC_LEASE_PREFIX, gcLeaseEpoch, gcLeaseKey } from '../store/keys.js';
import type { ObjectDriver, Signalled } from '../store/contract.js';
import { log } from '@transship/core/log';

export interface LeaseBody {
  owner: string;
  /** Local clock of the writer, ms; 0 = released. */
  expiresAt: number;
}

export interface LeaseOptions {
  ttlMs: number;
  skewMs: number;
  owner?: string | undefined;
  now?: (() => number) | undefined;
}

export type LeaseState = { held: true; epoch: number } | { held: false; holder?: LeaseBody | undefined };

export class GcLease {
  readonly owner: string;
  private readonly now: () => number;
  private epoch: number | undefined;
  private expiresAt = 0;

  constructor(
    private readonly objects: ObjectDriver,
    private readonly opts: LeaseOptions,
  ) {
    this.owner = opts.owner ?? `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;
    this.now = opts.now ?? Date.now;
  }

  /** True while this runner holds an epoch that has at least `marginMs` left (checked before every delete). */
  valid(marginMs = 0): boolean {
    return this.epoch !== undefined && this.now() + marginMs < this.expiresAt;
  }

  get heldEpoch(): number | undefined {
    return this.epoch;
  }

  private async newest(opts: Signalled): Promise<{ epoch: number; keys: string[] }> {
    const keys: string[] = [];
    let epoch = 0;
    for await (const e of this.objects.list(GC_LEASE_PREFIX, opts)) {
      const n = gcLeaseEpoch(e.key);
      if (n === undefined) continue;
      keys.push(e.key);
      epoch = Math.max(epoch, n);
    }
    return { epoch, keys };
  }

  private async write(epoch: number, expiresAt: number, opts: Signalled): Promise<boolean> {
    const body: LeaseBody = { owner: this.owner, expiresAt };
    return this.objects.putIfAbsent(gcLeaseKey(epoch), JSON.stringify(body), opts);
  }

  /** Takes the lease unless another runner holds it. */
  async acquire(opts: Signalled = {}): Promise<LeaseState> {
    const { epoch, keys } = await this.newest(opts);
    if (epoch > 0) {
      const current = await this.objects.get(gcLeaseKey(epoch), opts);
      let holder: LeaseBody | undefined;
      try {
        holder = current !== undefined ? (JSON.parse(current) as LeaseBody) : undefined;
      } catch {
        holder = undefined; // unreadable: treated as expired (it can only be junk, never a live runner's)
      }
      if (holder && holder.owner !== this.owner && holder.expiresAt + this.opts.skewMs > this.now()) return { held: false, holder };
    }
    const expiresAt = this.now() + this.opts.ttlMs;
    if (!(await this.write(epoch + 1, expiresAt, opts))) return { held: false };
    this.epoch = epoch + 1;
    this.expiresAt = expiresAt;
    // Epochs before ours are history; keep the one before for a post-mortem.
    const old = keys.filter((k) => (gcLeaseEpoch(k) ?? 0) < epoch);
    if (old.length) {
      const r = await this.objects.deleteMany(old, opts).catch((err: unknown) => ({ deleted: 0, errors: [{ key: '', code: 'TS_INTERNAL', message: errorSummary(err).message }] }));
      if (r.errors.length) log.debug({ errors: r.errors.slice(0, 3) }, 'could not delete old lease epochs');
    }
    return { held: true, epoch: this.epoch };
  }

  /** Extends the lease; false = it was lost (someone took over after judging it expired): stop deleting. */
  async renew(opts: Signalled = {}): Promise<boolean> {
    if (this.epoch === undefined || !this.valid()) return this.lost();
    const expiresAt = this.now() + this.opts.ttlMs;
    if (!(await this.write(this.epoch + 1, expiresAt, opts))) return this.lost();
    this.epoch += 1;
    this.expiresAt = expiresAt;
    return true;
  }

  private renewing: Promise<boolean> | undefined;

  /**
   * Renews when less than half the lease is left. Calls are serialised: two renewals at once would race for the
   * same next epoch and the loser would take itself for taken over.
   */
  keep(opts: Signalled = {}): Promise<boolean> {
    if (this.renewing) return this.renewing;
    if (this.epoch === undefined) return Promise.resolve(false);
    if (this.expiresAt - this.now() > this.opts.ttlMs / 2) return Promise.resolve(true);
    this.renewing = this.renew(opts).finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  private lost(): false {
    this.epoch = undefined;
    this.expiresAt = 0;
    return false;
  }

  /** Lets the next runner start at once. Best effort: an unreleased lease expires anyway. */
  async release(opts: Signalled = {}): Promise<void> {
    const epoch = this.epoch;
    this.lost();
    if (epoch === undefined) return;
    await this.write(epoch + 1, 0, opts).catch((err: unknown) => log.debug({ err: errorSummary(err) }, 'could not release the gc lease; it expires on its own'));
  }
}
