// `transship verify STORE`: re-hash every stored blob and check that every tag's manifest graph is complete.
// Reports each problem and exits 3 when anything is corrupt or missing.
import type { Command } from 'commander';
import { ExitCode } from '@transship/core/errors';
import { verifyStore } from '../transfer/store-verify.js';
import { printJson } from './output.js';
import { openStoreArg } from './args.js';
import { runCommand, loadCliConfig, type GlobalOptions } from './context.js';

export function registerVerify(program: Command): void {
  program
    .command('verify')
    .description('re-hash every stored blob and check every tag leads to a complete image; exit 3 on problems')
    .argument('[store]', 'dir:PATH, s3://BUCKET[/PREFIX] or store: (default: the configured store)')
    .option('--json', 'print JSON')
    .action(async (storeRef: string | undefined, flags: GlobalOptions, cmd: Command) =>
      runCommand(cmd, flags, async ({ signal }) => {
        const config = loadCliConfig(flags);
        const store = await openStoreArg(storeRef, config);
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
