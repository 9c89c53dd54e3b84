// The copy engine: plan (walk index → manifests → blobs), check presence once before any byte moves, upload what is
// missing with bounded concurrency, then manifests (children before the index), then commit (link + tag).
// One engine for every source/destination pair, so dedup, retries and progress behave the same everywhere.
import { TransshipError, throwIfAborted } from '@transship/core/errors';
import { forEachLimit } from '@transship/core/limit';
import { withSpan } from '@transship/core/tracing';
import { s3PutSkippedDueToDedup } from '../telemetry/metrics.js';
import { parseManifest, type ParsedManifest } from './manifest.js';
import type { Descriptor, FetchedManifest, ImageDestination, ImageSource } from './types.js';

export interface CopyPlan {
  root: FetchedManifest;
  /** Child manifests of an index (empty for a single manifest), in index order. */
  manifests: FetchedManifest[];
  /** Unique config and layer blobs across all manifests. */
  blobs: Descriptor[];
}

export type CopyEvent =
  | { type: 'plan'; blobs: number; bytes: number }
  | { type: 'present'; blobs: number; bytes: number }
  | { type: 'blob-start'; digest: string; size: number }
  | { type: 'blob-progress'; digest: string; bytes: number }
  | { type: 'blob-done'; digest: string; size: number; status: 'written' | 'exists' | 'mounted' };

export interface CopyOptions {
  signal?: AbortSignal | undefined;
  concurrency?: number | undefined;
  onEvent?: ((e: CopyEvent) => void) | undefined;
}

export interface CopySummary {
  source: string;
  destination: string;
  digest: string;
  mediaType: string;
  manifests: number;
  blobs: { total: number; uploaded: number; skipped: Record<string, number> };
  bytes: { total: number; uploaded: number; skipped: number };
}

/** Walks the image graph from its root. Multi-arch indexes are walked whole (every platform, nested indexes too). */
export async function plan(source: ImageSource, signal?: AbortSignal): Promise<CopyPlan> {
  return withSpan('transfer.plan', { 'transship.source': source.description }, async () => {
    const root = await source.root({ signal });
    const manifests: FetchedManifest[] = [];
    const blobs = new Map<string, Descriptor>();
    const seen = new Set<string>([root.descriptor.digest]);
    const visit = async (m: FetchedManifest, parsed: ParsedManifest, depth: number): Promise<void> => {
      if (depth > 4) throw new TransshipError('TS_MANIFEST_INVALID', 'image index nesting is deeper than 4 levels');
      if (parsed.kind === 'manifest') {
        for (const d of [parsed.config, ...parsed.layers]) if (!blobs.has(d.digest)) blobs.set(d.digest, d);
        return;
      }
      for (const child of parsed.manifests) {
        throwIfAborted(signal);
        if (seen.has(child.digest)) continue;
        seen.add(child.digest);
        const fetched = await source.manifest(child, { signal });
        const childParsed = parseManifest(fetched.bytes, child.mediaType);
        await visit(fetched, childParsed, depth + 1);
        manifests.push(fetched);
      }
    };
    await visit(root, parseManifest(root.bytes, root.descriptor.mediaType), 0);
    return { root, manifests, blobs: [...blobs.values()] };
  });
}

export async function copyImage(source: ImageSource, dest: ImageDestination, opts: CopyOptions = {}): Promise<CopySummary> {
  const signal = opts.signal;
  const emit = opts.onEvent ?? (() => undefined);
  return withSpan('transfer.copy', { 'transship.source': source.description, 'transship.destination': dest.description }, async () => {
    const p = await plan(source, signal);
    const totalBytes = p.blobs.reduce((a, b) => a + b.size, 0);
    emit({ type: 'plan', blobs: p.blobs.length, bytes: totalBytes });

    const allDescs = [...p.blobs, ...p.manifests.map((m) => m.descriptor), p.root.descriptor];
    const present = await withSpan('transfer.check', { 'transship.digests': allDescs.length }, () => dest.present(allDescs, { signal }));
    dest.notePresent?.(p.root.descriptor.digest, present);
    const skipped: Record<string, number> = {};
    let skippedBytes = 0;
    const missing: Descriptor[] = [];
    for (const b of p.blobs) {
      const why = present.get(b.digest);
      if (why) {
        skipped[why] = (skipped[why] ?? 0) + 1;
        skippedBytes += b.size;
        s3PutSkippedDueToDedup.inc({ reason: why });
      } else missing.push(b);
    }
    emit({ type: 'present', blobs: p.blobs.length - missing.length, bytes: skippedBytes });

    let uploadedBlobs = 0;
    let uploadedBytes = 0;
    // Biggest first: the long pole starts early, small blobs fill the gaps.
    missing.sort((a, b) => b.size - a.size);
    await withSpan('transfer.upload', { 'transship.blobs': missing.length }, () =>
      forEachLimit(missing, opts.concurrency ?? 4, async (desc, s) => {
        emit({ type: 'blob-start', digest: desc.digest, size: desc.size });
        const r = await withSpan('blob.upload', { 'transship.digest': desc.digest, 'transship.size': desc.size }, () =>
          dest.putBlob(desc, () => source.blob(desc, { signal: s, callerVerifies: true }), { signal: s, onProgress: (bytes) => emit({ type: 'blob-progress', digest: desc.digest, bytes }) }),
        );
        if (r.status === 'written') {
          uploadedBlobs++;
          uploadedBytes += desc.size;
        } else {
          const why = r.status === 'mounted' ? 'mount' : 'conditional_412';
          skipped[why] = (skipped[why] ?? 0) + 1;
          skippedBytes += desc.size;
          if (r.status === 'mounted') s3PutSkippedDueToDedup.inc({ reason: 'mount' });
        }
        emit({ type: 'blob-done', digest: desc.digest, size: desc.size, status: r.status });
      }, signal),
    );

    // Manifests after every blob they reference; children before the index that lists them.
    await withSpan('transfer.manifests', {}, async () => {
      for (const m of [...p.manifests, p.root]) {
        throwIfAborted(signal);
        if (!present.has(m.descriptor.digest)) await dest.putManifest(m, { signal });
      }
    });
    throwIfAborted(signal);
    await withSpan('transfer.commit', {}, () => dest.commit(p.root, { signal }));
    return {
      source: source.description,
      destination: dest.description,
      digest: p.root.descriptor.digest,
      mediaType: p.root.descriptor.mediaType,
      manifests: p.manifests.length + 1,
      blobs: { total: p.blobs.length, uploaded: uploadedBlobs, skipped },
      bytes: { total: totalBytes, uploaded: uploadedBytes, skipped: skippedBytes },
    };
  });
}
