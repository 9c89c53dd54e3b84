// `transship placement status`, `transship replicate` and `transship cost`: the regions feature from the CLI.
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { Regions } from '../placement/regions.js';
import { Rules } from '../placement/rules.js';
import { Replicator } from '../placement/replicator.js';
import { placementStatus, promotedUsage, type PromotedUsage } from '../placement/status.js';
import { evictorFromConfig } from '../placement/evict.js';
import { PromotionLedger, stampPeriodMs } from '../placement/promoted.js';
import { costInputFromMetrics, estimateCost, prices } from '../placement/cost.js';
import { TransshipError, ExitCode } from '@transship/core/errors';
import type { Config } from '../config/config.js';
import { runPass } from '../gc/pass.js';
import { gcSettings } from '../gc/settings.js';
import { formatBytes } from './progress.js';
import { printJson, writeMetricsFile } from './output.js';
import { runCommand, loadCliConfig, type GlobalOptions } from './context.js';

function replicatorFor(config: Config, regions: Regions): Replicator {
  return Replicator.fromConfig(config, regions);
}

export function registerPlacement(program: Command): void {
  const placement = program.command('placement').description('where images live across regions');
  placement
    .command('status')
    .description('repositories and tags per region, what the rules want, what is pending')
    .option('--json', 'print JSON')
    .action(async (flags: GlobalOptions, cmd: Command) =>
      runCommand(cmd, flags, async ({ signal }) => {
        const config = loadCliConfig(flags);
        const regions = Regions.fromConfig(config);
        try {
          const st = await placementStatus(regions, Rules.fromConfig(config), replicatorFor(config, regions), { signal });
          if (flags.json) printJson(st);
          else {
            process.stdout.write(`home region: ${st.home}\n`);
            const pr = st.promote;
            const first = pr.policy === 'always' || (pr.policy === 'demand' && pr.reads === 1);
            process.stdout.write(`promotion: ${first ? 'on the first remote read' : pr.policy === 'demand' && pr.reads !== null ? `when a blob was read remotely ${pr.reads} times within ${pr.windowSeconds} s` : 'never'}`);
            process.stdout.write(pr.policy === 'never' ? '\n' : `; promoted copies evicted ${pr.evictAfterIdleSeconds === null ? 'never' : `after ${formatIdle(pr.evictAfterIdleSeconds)} unread`}\n`);
            for (const r of st.regions) {
              const pc = r.promoted?.blobs ? `  (promoted copies: ${r.promoted.blobs}, ${formatBytes(r.promoted.bytes)}; idle past the limit: ${r.promoted.idleBlobs}, ${formatBytes(r.promoted.idleBytes)})` : '';
              process.stdout.write(`  ${r.name.padEnd(12)} ${r.store}  ${r.blobs} blobs, ${formatBytes(r.bytes)}${pc}${r.error ? `  UNREACHABLE: ${r.error}` : ''}\n`);
            }
            for (const repo of st.repositories) {
              process.stdout.write(`${repo.repository}  (rule: ${repo.rule.reason}${repo.rule.regions ? ' → ' + repo.rule.regions.join(',') : ''})\n`);
              for (const [tag, where] of Object.entries(repo.tags)) process.stdout.write(`  :${tag.padEnd(20)} ${Object.keys(where).join(', ')}\n`);
            }
            process.stdout.write(`pending: ${st.pending.length}\n`);
            for (const p of st.pending) process.stdout.write(`  ${p.repo}:${p.tag} ${p.from} → ${p.to}\n`);
          }
          return st.regions.some((r) => r.error) ? ExitCode.failure : ExitCode.ok;
        } finally {
          await regions.close();
        }
      }),
    );

  placement
    .command('evict')
    .description('remove promoted copies idle longer than placement.promote.evictAfterIdle from the home region (never one a local repository needs, never the last original)')
    .option('--dry-run', 'report what would be evicted; write and delete nothing')
    .option('--json', 'print JSON')
    .action(async (flags: GlobalOptions & { dryRun?: boolean }, cmd: Command) =>
      runCommand(cmd, flags, async ({ signal }) => {
        const config = loadCliConfig(flags);
        if (!config.regions) throw new TransshipError('TS_CONFIG_INVALID', 'placement evict needs `regions:` in the config (promoted copies exist only with other regions to promote from)');
        const regions = Regions.fromConfig(config);
        try {
          const rules = Rules.fromConfig(config);
          const ledger = new PromotionLedger(regions.homeStore, { stampMs: stampPeriodMs(rules.promote.evictAfterIdleMs) });
          const r = await evictorFromConfig(config, regions, rules, ledger).pass({ signal, dryRun: flags.dryRun });
          if (flags.json) printJson(r);
          else {
            const verb = r.dryRun ? 'would evict' : 'evicted';
            for (const e of r.evicted) process.stdout.write(`${verb} ${e.digest} (${formatBytes(e.size)}, unread for ${formatIdle(e.idleMs / 1000)})\n`);
            for (const k of r.kept) process.stdout.write(`kept ${k.digest} (${formatBytes(k.size)}): ${k.reason}\n`);
            for (const x of r.restored) process.stdout.write(`restored ${x.digest} (${formatBytes(x.size)}): a local repository came to need it\n`);
            process.stdout.write(
              `${r.region}: ${r.promoted} promoted copies, ${r.warm} read recently; ${verb} ${r.evicted.length} (${formatBytes(r.bytesEvicted)}), kept ${r.kept.length}, ` +
                `${r.pending} awaiting the check after grace, ${r.confirmed} confirmed, ${r.restored.length} restored${r.truncated ? ' (more next pass)' : ''}; ` +
                `idle limit ${r.evictAfterIdleSeconds === null ? 'never' : formatIdle(r.evictAfterIdleSeconds)}\n`,
            );
          }
          return ExitCode.ok;
        } finally {
          await regions.close();
        }
      }),
    );

  program
    .command('replicate')
    .description('copy images to the regions the rules want (an idempotent reconcile pass; --watch repeats it)')
    .option('--json', 'print JSON')
    .option('--repo <name...>', 'only these repositories')
    .option('--watch', 'keep reconciling every placement.replicator.intervalSeconds (default 30)')
    .option('--metrics-file <file>', 'write metrics when done (each pass with --watch)')
    .action(async (flags: GlobalOptions & { repo?: string[]; watch?: boolean; metricsFile?: string }, cmd: Command) =>
      runCommand(cmd, flags, async ({ signal }) => {
        const config = loadCliConfig(flags);
        if (!config.regions) throw new TransshipError('TS_CONFIG_INVALID', 'replicate needs `regions:` in the config (and `placement.rules` with reason: dr)');
        const regions = Regions.fromConfig(config);
        const replicator = replicatorFor(config, regions);
        try {
          for (;;) {
            const report = await replicator.reconcile({ signal, repos: flags.repo });
            if (flags.json) printJson(report);
            else {
              for (const c of report.copied) process.stdout.write(`copied ${c.repo}:${c.tag} ${c.from} → ${c.to} (${formatBytes(c.bytes)}, ${c.blobsUploaded} blobs, ${c.blobsSkipped} already there)\n`);
              for (const f of report.failed) process.stdout.write(`FAILED ${f.repo}:${f.tag} ${f.from} → ${f.to}: ${f.error}\n`);
              process.stdout.write(`${report.copied.length} copied, ${report.upToDate} up to date, ${report.failed.length} failed, ${formatBytes(report.bytes)} crossed regions\n`);
            }
            if (flags.metricsFile) await writeMetricsFile(flags.metricsFile);
            if (!flags.watch) return report.failed.length ? ExitCode.failure : ExitCode.ok;
            await sleep((config.placement?.replicator?.intervalSeconds ?? 30) * 1000, undefined, { signal }).catch(() => undefined);
            if (signal.aborted) return ExitCode.cancelled;
          }
        } finally {
          await regions.close();
        }
      }),
    );

  program
    .command('cost')
    .description('requests by class, stored bytes, dedup savings and cross-region bytes at a price table (AWS list prices by default)')
    .option('--json', 'print JSON')
    .option('--metrics <file|url>', 'Prometheus metrics to read counters from (a --metrics-file, or http://HOST:PORT/metrics of `serve`)')
    .option('--reclaimable', 'also price what garbage collection would remove now (a dry-run pass per region: reads every manifest)')
    .action(async (flags: GlobalOptions & { metrics?: string; reclaimable?: boolean }, cmd: Command) =>
      runCommand(cmd, flags, async ({ signal }) => {
        const config = loadCliConfig(flags);
        let text = '';
        if (flags.metrics) {
          if (/^https?:\/\//.test(flags.metrics)) {
            const res = await fetch(flags.metrics, { signal });
            if (!res.ok) throw new TransshipError('TS_NETWORK', `GET ${flags.metrics}: HTTP ${res.status}`);
            text = await res.text();
          } else text = await readFile(flags.metrics, 'utf8').catch((err: unknown) => {
            throw new TransshipError('TS_NOT_FOUND', `cannot read metrics file ${flags.metrics}: ${(err as Error).message}`);
          });
        }
        const regions = Regions.fromConfig(config);
        const idleMs = Rules.fromConfig(config).promote.evictAfterIdleMs;
        let storedBytes = 0;
        const promoted: PromotedUsage = { blobs: 0, bytes: 0, idleBlobs: 0, idleBytes: 0 };
        let reclaimableBytes: number | undefined;
        try {
          for (const name of regions.names) {
            if (flags.reclaimable) {
              // What the next GC pass would delete (docs/gc.md): a dry run, nothing changes.
              const r = await runPass(regions.store(name), gcSettings(config), { dryRun: true, signal });
              reclaimableBytes = (reclaimableBytes ?? 0) + r.reclaimedBytes;
            }
            const sizes = new Map<string, number>();
            for await (const b of regions.store(name).listBlobs({ signal })) {
              storedBytes += b.size;
              sizes.set(b.digest, b.size);
            }
            if (regions.others.length === 0) continue;
            const u = await promotedUsage(regions.store(name), sizes, idleMs, { signal });
            promoted.blobs += u.blobs;
            promoted.bytes += u.bytes;
            promoted.idleBlobs += u.idleBlobs;
            promoted.idleBytes += u.idleBytes;
          }
        } finally {
          await regions.close();
        }
        const p = prices(config);
        const base = estimateCost({ ...costInputFromMetrics(text), storedBytes }, p);
        // Promoted copies are part of the stored bytes; shown apart because eviction bounds how long they are paid for.
        const est = {
          ...base,
          promoted: { ...promoted, monthlyCost: (promoted.bytes / 1e9) * p.storageGbMonth, evictAfterIdleSeconds: Number.isFinite(idleMs) ? idleMs / 1000 : null },
          ...(reclaimableBytes !== undefined ? { reclaimable: { bytes: reclaimableBytes, monthlyCost: (reclaimableBytes / 1e9) * p.storageGbMonth } } : {}),
        };
        if (flags.json) printJson(est);
        else {
          const $ = (n: number) => `$${n.toFixed(4)}`;
          process.stdout.write(
            `requests      ${est.requests.putClass} PUT-class, ${est.requests.getClass} GET-class  ${$(est.requests.cost)}\n` +
              `stored        ${formatBytes(est.storage.bytes)}  ${$(est.storage.monthlyCost)}/month\n` +
              `  promoted    ${formatBytes(est.promoted.bytes)} in ${est.promoted.blobs} copies  ${$(est.promoted.monthlyCost)}/month; idle past the limit: ${formatBytes(est.promoted.idleBytes)} (evicted by the next pass)\n` +
              `dedup saved   ${formatBytes(est.dedup.bytesSaved)} not stored again  ${$(est.dedup.monthlyStorageSaved)}/month\n` +
              `cross-region  ${formatBytes(est.crossRegion.bytes)}  ${$(est.crossRegion.cost)}\n` +
              (est.reclaimable ? `reclaimable   ${formatBytes(est.reclaimable.bytes)} the next gc pass removes  ${$(est.reclaimable.monthlyCost)}/month\n` : ''),
          );
        }
      }),
    );
}

/** Seconds as the largest whole unit that fits: `26d`, `12h`, `90m`, `45s`. */
function formatIdle(seconds: number): string {
  if (seconds >= 86400) return `${+(seconds / 86400).toFixed(1)}d`;
  if (seconds >= 3600) return `${+(seconds / 3600).toFixed(1)}h`;
  if (seconds >= 60) return `${+(seconds / 60).toFixed(1)}m`;
  return `${+seconds.toFixed(1)}s`;
}
