// `transship verify STORE`: re-hash every stored blob and check that every tag's manifest graph is complete.
// Reports each problem and exits 3 when anything is corrupt or missing.
import type { Command } from 'commander';
import { VerifyingStream } from '../core/digest.js';
import { ExitCode, errorSummary, isTransshipError, throwIfAborted } from '../core/errors.js';
import { forEachLimit } from '../core/limit.js';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { parseManifest, references } from '../transfer/manifest.js';
import type { BlobInfo, BlobStore } from '../store/contract.js';
import { TEMP_ORPHAN_AGE_MS } from '../store/fs-store.js';
import { printJson } from './output.js';
import { storeArg } from './ls.js';
import { runCommand, loadCliConfig, type GlobalOptions } from './context.js';

export interface VerifyProblem {
  kind: 'corrupt' | 'missing' | 'unreadable';
  digest: string;
  detail: string;
  repository?: string;
  tag?: string;
}

/** A temp file an interrupted write left (fs store: `.tmp/*.part`): no data is wrong, but the bytes are wasted. */
export interface VerifyLeftover {
  key: string;
  size: number;
  ageSeconds: number;
}

export async function verifyStore(store: BlobStore, opts: { signal?: AbortSignal; concurrency?: number } = {}): Promise<{ blobs: number; bytes: number; problems: VerifyProblem[]; leftovers: VerifyLeftover[] }> {
  const problems: VerifyProblem[] = [];
  const blobs: BlobInfo[] = [];
  for await (const b of store.listBlobs({ signal: opts.signal })) blobs.push(b);
  let bytes = 0;
  const present = new Set(blobs.map((b) => b.digest));
  await forEachLimit(blobs, opts.concurrency ?? 4, async (b, signal) => {
    try {
      const v = new VerifyingStream({ expected: b.digest });
      await pipeline(await store.getBlob(b.digest, { signal }), v, new Writable({ write: (_c, _e, cb) => cb() }), { signal });
      bytes += v.bytes;
    } catch (err) {
      if (isTransshipError(err, 'TS_CANCELLED')) throw err;
      problems.push({ kind: isTransshipError(err, 'TS_DIGEST_MISMATCH') ? 'corrupt' : 'unreadable', digest: b.digest, detail: errorSummary(err).message });
    }
  }, opts.signal);
  // Every tag must lead to a complete graph (manifest → children → blobs).
  for (const repo of await store.listRepos({ signal: opts.signal })) {
    for (const tag of await store.listTags(repo, { signal: opts.signal })) {
      throwIfAborted(opts.signal);
      const root = await store.getTag(repo, tag, { signal: opts.signal });
      const queue = root ? [root] : [];
      while (queue.length) {
        const d = queue.shift() as string;
        if (!present.has(d)) {
          problems.push({ kind: 'missing', digest: d, detail: 'referenced but not stored', repository: repo, tag });
          continue;
        }
        if (problems.some((p) => p.digest === d)) continue;
        try {
          const parsed = parseManifest(await buffer(await store.getBlob(d, { signal: opts.signal })));
          for (const ref of references(parsed)) {
            if (parsed.kind === 'index') queue.push(ref.digest);
            else if (!present.has(ref.digest)) problems.push({ kind: 'missing', digest: ref.digest, detail: `referenced by ${d} but not stored`, repository: repo, tag });
          }
        } catch (err) {
          problems.push({ kind: 'unreadable', digest: d, detail: errorSummary(err).message, repository: repo, tag });
        }
      }
    }
  }
  // Temp files older than the sweep limit belong to no live write (younger ones may be a copy running now).
  const leftovers: VerifyLeftover[] = [];
  if (store.listTemporary) {
    for await (const t of store.listTemporary({ signal: opts.signal })) {
      const age = Date.now() - t.lastModified;
      if (age >= TEMP_ORPHAN_AGE_MS) leftovers.push({ key: t.key, size: t.size, ageSeconds: Math.floor(age / 1000) });
    }
  }
  return { blobs: blobs.length, bytes, problems, leftovers };
}

export function registerVerify(program: Command): void {
  program
    .command('verify')
    .description('re-hash every stored blob and check every tag leads to a complete image; exit 3 on problems')
    .argument('[store]', 'dir:PATH, s3://BUCKET[/PREFIX] or store: (default: the configured store)')
    .option('--json', 'print JSON')
    .action(async (storeRef: string | undefined, flags: GlobalOptions, cmd: Command) =>
      runCommand(cmd, flags, async ({ signal }) => {
        const config = loadCliConfig(flags);
        const store = storeArg(storeRef, config);
        try {
          const r = await verifyStore(store, { signal, concurrency: config.concurrency ?? 4 });
          if (flags.json) printJson({ store: store.name, ...r, ok: r.problems.length === 0 });
          else {
            process.stdout.write(`${store.name}: ${r.blobs} blobs, ${r.bytes} bytes re-hashed, ${r.problems.length} problem(s)\n`);
            for (const p of r.problems) process.stdout.write(`  ${p.kind.padEnd(10)} ${p.digest} ${p.repository ? `${p.repository}:${p.tag} ` : ''}${p.detail}\n`);
            if (r.leftovers.length > 0) {
              const wasted = r.leftovers.reduce((n, l) => n + l.size, 0);
              process.stdout.write(`${r.leftovers.length} temp file(s) of interrupted writes (${wasted} bytes), removed by the store's next write or by gc:\n`);
              for (const l of r.leftovers) process.stdout.write(`  leftover   ${l.key} ${l.size} bytes, ${l.ageSeconds}s old\n`);
            }
          }
          return r.problems.length ? ExitCode.findings : ExitCode.ok;
        } finally {
          await store.close();
        }
      }),
    );
}
