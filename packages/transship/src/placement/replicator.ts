// The replicator: an idempotent reconciler from desired placement (rules) to actual placement (what each region's
// store holds). It keeps no queue and no state of its own: every pass re-derives the work from the stores, so a
// crash (even kill -9) loses nothing, and a restart finishes the job without re-copying what is already there —
// the copy engine's presence check skips every blob that made it across, and writes go blobs → manifests → tag,
// so a target tag only ever points at a complete image. The registry's per-repository links (blob links for auth,
// referrer links) are copied between the blobs and the tag too (links.ts), so a replicated repository is readable
// with auth on in the target region as soon as its tag is.
import { Transform, pipeline, type Readable } from 'node:stream';
import { errorSummary, isTransshipError, throwIfAborted } from '@transship/core/errors';
import { forEachLimit } from '@transship/core/limit';
import { Throttle } from '@transship/core/throttle';
import { copyImage } from '../transfer/copy.js';
import { StoreDestination } from '../transfer/store-destination.js';
import { StoreSource } from '../transfer/store-source.js';
import type { Descriptor, FetchedManifest, ImageDestination, ImageSource } from '../transfer/types.js';
import type { Signalled } from '@transship/core/signal';
import { crossRegionUploadBytesTotal } from '../telemetry/metrics.js';
import { withSpan } from '@transship/core/tracing';
import { log } from '@transship/core/log';
import type { Regions } from './regions.js';
import { Rules } from './rules.js';
import type { Config } from '../config/config.js';
import { copyRepoLinks } from './links.js';

export interface PlacementTask {
  repo: string;
  tag: string;
  digest: string;
  from: string;
  to: string;
}

export interface ReconcileReport {
  /** Tags copied in this pass. */
  copied: Array<PlacementTask & { bytes: number; blobsUploaded: number; blobsSkipped: number; linksCopied: number }>;
  /** Tags already where the rules want them. */
  upToDate: number;
  failed: Array<PlacementTask & { error: string }>;
  bytes: number;
}

export interface ReplicatorOptions {
  concurrency?: number | undefined;
  bandwidthBytesPerSecond?: number | undefined;
}

export class Replicator {
  private readonly throttle: Throttle | undefined;

  constructor(
    readonly regions: Regions,
    readonly rules: Rules,
    private readonly opts: ReplicatorOptions = {},
  ) {
    this.throttle = opts.bandwidthBytesPerSecond ? new Throttle(opts.bandwidthBytesPerSecond) : undefined;
  }

  /** The replicator `placement.rules` and `placement.replicator` describe (CLI `replicate`, `serve` after pushes). */
  static fromConfig(config: Config, regions: Regions): Replicator {
    const r = config.placement?.replicator;
    return new Replicator(regions, Rules.fromConfig(config), { concurrency: r?.concurrency, bandwidthBytesPerSecond: r?.bandwidthBytesPerSecond });
  }

  /** Desired vs actual: every (repo, tag) whose dr targets do not hold the same digest. */
  async pending(opts: Signalled & { repos?: string[] | undefined } = {}): Promise<{ tasks: PlacementTask[]; upToDate: number }> {
    const tasks: PlacementTask[] = [];
    let upToDate = 0;
    const seen = new Set<string>();
    for (const from of this.regions.names) {
      const store = this.regions.store(from);
      const repos = opts.repos ?? (await store.listRepos(opts));
      for (const repo of repos) {
        const targets = this.rules.drTargets(repo, this.regions.names).filter((t) => t !== from);
        if (targets.length === 0) continue;
        for (const tag of await store.listTags(repo, opts)) {
          throwIfAborted(opts.signal);
          const digest = await store.getTag(repo, tag, opts);
          if (!digest) continue;
          for (const to of targets) {
            const key = `${repo}:${tag}->${to}`;
            if (seen.has(key)) continue;
            const there = await this.regions.store(to).getTag(repo, tag, opts);
            if (there === digest) {
              upToDate++;
              seen.add(key);
            } else if (from === this.regions.home || !tasks.some((t) => t.repo === repo && t.tag === tag && t.to === to)) {
              // When two regions disagree about a tag, the home region's view wins for this instance's replicator.
              const i = tasks.findIndex((t) => t.repo === repo && t.tag === tag && t.to === to);
              if (i !== -1) tasks.splice(i, 1);
              tasks.push({ repo, tag, digest, from, to });
            }
          }
        }
      }
    }
    return { tasks, upToDate };
  }

  /** One reconcile pass. Safe to run concurrently with pushes and with other replicators (dedup makes it so). */
  async reconcile(opts: Signalled & { repos?: string[] | undefined } = {}): Promise<ReconcileReport> {
    return withSpan('placement.reconcile', {}, async () => {
      const { tasks, upToDate } = await this.pending(opts);
      const report: ReconcileReport = { copied: [], upToDate, failed: [], bytes: 0 };
      await forEachLimit(tasks, this.opts.concurrency ?? 2, async (task, signal) => {
        try {
          const { summary: s, links } = await this.copyTask(task, signal);
          report.copied.push({ ...task, bytes: s.bytes.uploaded, blobsUploaded: s.blobs.uploaded, blobsSkipped: s.blobs.total - s.blobs.uploaded, linksCopied: links });
          report.bytes += s.bytes.uploaded;
        } catch (err) {
          if (isTransshipError(err, 'TS_CANCELLED')) throw err;
          report.failed.push({ ...task, error: `${errorSummary(err).code}: ${errorSummary(err).message}` });
          log.error({ ...task, err: errorSummary(err) }, 'replication failed; the next pass retries it');
        }
      }, opts.signal);
      return report;
    });
  }

  private async copyTask(task: PlacementTask, signal: AbortSignal) {
    return withSpan('placement.replicate', { 'transship.repo': task.repo, 'transship.tag': task.tag, 'transship.from': task.from, 'transship.to': task.to }, async () => {
      const source = this.metered(new StoreSource(this.regions.store(task.from), task.repo, task.digest), task);
      const dest = new StoreDestination(this.regions.store(task.to), task.repo, task.tag);
      let links = 0;
      // commit() is the tag write, the last step: this image's blobs and manifests are in place by then, so the
      // links go in right before it and the tag never precedes them. Links are the repository's (every tag's), so
      // one may name a blob another tag's copy has not brought yet: that only lets a read through to a lazy fetch.
      // Cost: one LIST per link prefix in the source per tag copied (2 requests when auth is off).
      const linking: ImageDestination = {
        description: dest.description,
        present: (d, o) => dest.present(d, o),
        putBlob: (d, open, o) => dest.putBlob(d, open, o),
        putManifest: (m, o) => dest.putManifest(m, o),
        notePresent: (root, present) => dest.notePresent(root, present),
        close: () => dest.close(),
        commit: async (root: FetchedManifest, o?: Signalled) => {
          const r = await copyRepoLinks(this.regions.store(task.from), this.regions.store(task.to), task.repo, { signal: o?.signal ?? signal });
          if (r.bytes) crossRegionUploadBytesTotal.inc({ from: task.from, to: task.to }, r.bytes);
          links = r.copied;
          await dest.commit(root, o);
        },
      };
      const summary = await copyImage(source, linking, { signal, concurrency: 4 });
      return { summary, links };
    });
  }

  /** Wraps a source so blob bytes are throttled (bandwidth cap) and counted as cross-region bytes. */
  private metered(source: ImageSource, task: PlacementTask): ImageSource {
    const throttle = this.throttle;
    return {
      description: source.description,
      root: (o) => source.root(o),
      manifest: (d, o) => source.manifest(d, o),
      close: () => source.close(),
      blob: async (desc: Descriptor, o?: Signalled): Promise<Readable> => {
        const raw = await source.blob(desc, o);
        const count = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            crossRegionUploadBytesTotal.inc({ from: task.from, to: task.to }, chunk.length);
            cb(null, chunk);
          },
        });
        return throttle ? pipeline(raw, throttle.stream(), count, () => undefined) : pipeline(raw, count, () => undefined);
      },
    };
  }
}
