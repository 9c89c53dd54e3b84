// `transship gc [STORE] [--dry-run] [--json] [--region R]`: one garbage collection pass (docs/gc.md) — online, with
// any number of writers on the same store. Exit 0 when the pass succeeded or another instance holds the lease
// (nothing to do here); 1 when it failed or stopped early (a rerun continues; nothing reachable is ever deleted).
import type { Command } from 'commander';
import { ExitCode } from '@transship/core/errors';
import { openConfiguredStore } from '../store/open.js';
import { gcSettings } from '../gc/settings.js';
import { runPass } from '../gc/pass.js';
import { formatReport } from '../gc/report.js';
import { printJson } from './output.js';
import { openStoreArg } from './args.js';
import { runCommand, loadCliConfig, type GlobalOptions } from './context.js';

interface GcFlags extends GlobalOptions {
  dryRun?: boolean;
  region?: string;
  spoolDir?: string;
}

export function registerGc(program: Command): void {
  program
    .command('gc')
    .description('remove unreachable blobs, links and expired tags (retention rules) past the grace period; online and safe with concurrent writers')
    .argument('[store]', 'dir:PATH, s3://BUCKET[/PREFIX], store: or store@REGION (default: the configured store)')
    .option('--dry-run', 'print exactly what would be removed; change nothing')
    .option('--region <name>', "the configured store of this region (per-region GC: each region's store is collected on its own)")
    .option('--spool-dir <dir>', 'also remove upload spools that crashed registry instances left here (serve.uploadDir)')
    .option('--json', 'print the report as JSON')
    .action(async (storeRef: string | undefined, flags: GcFlags, cmd: Command) =>
      runCommand(cmd, flags, async ({ signal }) => {
        const config = loadCliConfig(flags);
        const store = flags.region ? openConfiguredStore(config, flags.region) : await openStoreArg(storeRef, config);
        try {
          const report = await runPass(store, gcSettings(config), { dryRun: flags.dryRun, signal, spoolDir: flags.spoolDir ?? config.serve?.uploadDir });
          if (flags.json) printJson(report);
          else process.stdout.write(`${formatReport(report)}\n`);
          return report.result === 'success' || report.result === 'busy' ? ExitCode.ok : ExitCode.failure;
        } finally {
          await store.close();
        }
      }),
    );
}
