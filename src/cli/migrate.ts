// `transship migrate [STORE]`: rewrites a store written before the reserved layout (src/store/migrate.ts says how
// and why it is safe to re-run and to kill). Run it once after every instance runs this version; until then the
// store works unmigrated (reads fall back to the old layout, at the cost src/store/repository.ts states).
import type { Command } from 'commander';
import { ExitCode } from '../core/errors.js';
import { migrateLayout } from '../store/migrate.js';
import { printJson } from './output.js';
import { storeArg } from './ls.js';
import { runCommand, loadCliConfig, type GlobalOptions } from './context.js';

export function registerMigrate(program: Command): void {
  program
    .command('migrate')
    .description('rewrite a store from the old key layout to the current one (idempotent; safe to interrupt and re-run)')
    .argument('[store]', 'dir:PATH, s3://BUCKET[/PREFIX], store: or store@REGION (default: the configured store)')
    .option('--dry-run', 'print the keys that would move; change nothing')
    .option('--json', 'print JSON')
    .action(async (storeRef: string | undefined, flags: GlobalOptions & { dryRun?: boolean }, cmd: Command) =>
      runCommand(cmd, flags, async ({ signal }) => {
        const config = loadCliConfig(flags);
        const store = storeArg(storeRef, config);
        try {
          const moves: Array<{ from: string; to: string }> = [];
          const report = await migrateLayout(store, {
            signal,
            dryRun: flags.dryRun === true,
            onMove: (m) => {
              if (flags.dryRun && flags.json) moves.push(m);
              else if (flags.dryRun) process.stdout.write(`${m.from} -> ${m.to}\n`);
            },
          });
          if (flags.json) printJson({ ...report, ...(flags.dryRun ? { moves } : {}), requests: store.requestCounts() });
          else {
            const verb = report.dryRun ? 'would move' : 'moved';
            process.stdout.write(`${store.name}: ${verb} ${report.moved} keys (${report.alreadyPresent} already in place, ${report.deleted} old keys deleted)` +
              `${report.oldStaging ? `; ${report.oldStaging} old staged uploads are left for the staging sweep` : ''}` +
              `${report.marker ? '; layout marker present: readers no longer look at the old layout' : ''}\n`);
            for (const e of report.errors) process.stderr.write(`could not delete ${e.key}: ${e.code} ${e.message} (run migrate again)\n`);
          }
          return report.errors.length > 0 ? ExitCode.failure : undefined;
        } finally {
          await store.close();
        }
      }),
    );
}
