// `transship ls STORE [REPO]`: repositories and their tags (with manifest digests), in a store or in a registry
// (`docker://HOST[/REPO]`: the catalog, or one repository's tags, every page).
import type { Command } from 'commander';
import { forEachLimit } from '@transship/core/limit';
import { validateRepoName } from '@transship/core/names';
import { printJson } from './output.js';
import { runCommand, loadCliConfig, type GlobalOptions } from './context.js';
import { openStoreArg, parseBool, registryAccess } from './args.js';

interface LsFlags extends GlobalOptions {
  json?: boolean;
  creds?: string;
  tlsVerify?: boolean;
}

type Listing = Array<{ repository: string; tags: Array<{ tag: string; digest: string | undefined }> }>;

export function registerLs(program: Command): void {
  program
    .command('ls')
    .description('list repositories and tags in a store or a registry')
    .argument('[store]', 'dir:PATH, s3://BUCKET[/PREFIX], store:, store@REGION, or docker://HOST[/REPO] (default: the configured store)')
    .argument('[repo]', 'only this repository')
    .option('--json', 'print JSON')
    .option('--creds <user:password>', 'docker:// credentials (default: the auth files and credential helpers, as skopeo)')
    .option('--tls-verify [bool]', 'false: plain HTTP to a docker:// registry (loopback registries always do)', parseBool('--tls-verify'))
    .action(async (storeRef: string | undefined, repo: string | undefined, flags: LsFlags, cmd: Command) =>
      runCommand(cmd, flags, async ({ signal }) => {
        const config = loadCliConfig(flags);
        let name: string;
        let out: Listing;
        if (storeRef?.startsWith('docker://')) ({ name, out } = await listRegistry(storeRef, repo, flags, signal));
        else {
          const store = await openStoreArg(storeRef, config);
          name = store.name;
          out = [];
          try {
            const repos = repo ? [validateRepoName(repo)] : await store.listRepos({ signal });
            for (const r of repos) {
              const tags = await store.listTags(r, { signal });
              out.push({ repository: r, tags: await Promise.all(tags.map(async (t) => ({ tag: t, digest: await store.getTag(r, t, { signal }) }))) });
            }
          } finally {
            await store.close();
          }
        }
        if (flags.json) printJson({ store: name, repositories: out });
        else if (out.length === 0) process.stdout.write(`no repositories in ${name}\n`);
        else for (const r of out) for (const t of r.tags.length ? r.tags : [{ tag: '(untagged)', digest: '' }]) process.stdout.write(`${r.repository}:${t.tag}\t${t.digest ?? ''}\n`);
      }),
    );
}

/** `docker://HOST` lists the catalog; `docker://HOST/REPO` (or a `[repo]` argument) one repository. */
async function listRegistry(ref: string, repoArg: string | undefined, flags: LsFlags, signal: AbortSignal): Promise<{ name: string; out: Listing }> {
  const { parseImageReference } = await import('../transfer/reference.js');
  const { RegistryClient } = await import('../transfer/sources/registry-client.js');
  const { lookupCredentials } = await import('../transfer/sources/registry-credentials.js');
  const { MANIFEST_ACCEPT } = await import('../transfer/sources/docker-registry.js');
  const rest = ref.slice('docker://'.length).replace(/\/+$/, '');
  const slash = rest.indexOf('/');
  const repoInRef = slash < 0 ? undefined : rest.slice(slash + 1);
  const repo = repoArg ?? repoInRef;
  // The reference parser normalises the registry (docker.io → its API endpoint); a placeholder repo when listing all.
  const parsed = parseImageReference(`docker://${slash < 0 ? rest : rest.slice(0, slash)}/${repo ?? 'x'}`);
  if (parsed.transport !== 'docker') throw new Error('unreachable: a docker:// reference');
  const access = registryAccess(flags.creds, flags.tlsVerify, '--creds');
  const credentials = await lookupCredentials(parsed.registry, repo ? parsed.repo : undefined, { explicit: access.credentials, signal });
  const client = new RegistryClient(parsed.registry, parsed.endpoint, { credentials, insecure: access.insecure, signal });
  const repos = repo ? [parsed.repo] : await client.catalog(signal);
  const out: Listing = [];
  for (const r of repos) {
    client.want(`repository:${r}:pull`);
    const tags = await client.tags(r, signal);
    const entries = tags.map((tag) => ({ tag, digest: undefined as string | undefined }));
    await forEachLimit(entries, 8, async (e, s) => {
      e.digest = await client.tagDigest(r, e.tag, MANIFEST_ACCEPT, s);
    }, signal);
    out.push({ repository: r, tags: entries });
  }
  return { name: `docker://${parsed.registry}`, out };
}
