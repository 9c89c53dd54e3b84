// `transship ls STORE [REPO]`: repositories and their tags (with manifest digests).
import type { Command } from 'commander';
import { validateRepoName } from '@transship/core/names';
import { printJson } from './output.js';
import { runCommand, loadCliConfig, type GlobalOptions } from './context.js';
import { openStoreArg } from './args.js';

export function registerLs(program: Command): void {
  program
    .command('ls')
    .description('list repositories and tags in a store')
    .argument('[store]', 'dir:PATH, s3://BUCKET[/PREFIX], store: or store@REGION (default: the configured store)')
    .argument('[repo]', 'only this repository')
    .option('--json', 'print JSON')
    .action(async (storeRef: string | undefined, repo: string | undefined, flags: GlobalOptions, cmd: Command) =>
      runCommand(cmd, flags, async ({ signal }) => {
        const config = loadCliConfig(flags);
        const store = await openStoreArg(storeRef, config);
        try {
          const repos = repo ? [validateRepoName(repo)] : await store.listRepos({ signal });
          const out: Array<{ repository: string; tags: Array<{ tag: string; digest: string | undefined }> }> = [];
          for (const r of repos) {
            const tags = await store.listTags(r, { signal });
            out.push({ repository: r, tags: await Promise.all(tags.map(async (t) => ({ tag: t, digest: await store.getTag(r, t, { signal }) }))) });
          }
          if (flags.json) printJson({ store: store.name, repositories: out });
          else if (out.length === 0) process.stdout.write(`no repositories in ${store.name}\n`);
          else for (const r of out) for (const t of r.tags.length ? r.tags : [{ tag: '(untagged)', digest: '' }]) process.stdout.write(`${r.repository}:${t.tag}\t${t.digest ?? ''}\n`);
        } finally {
          await store.close();
        }
      }),
    );
}
