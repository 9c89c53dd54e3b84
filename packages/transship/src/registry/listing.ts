// Tag listing, catalog and referrers: JSON lists with the spec's `n`/`last` pagination and `Link: <…>; rel="next"`.
import { RegistryError } from './errors.js';
import type { Call } from './context.js';
import { MediaTypes } from '../transfer/types.js';

const MAX_PAGE = 10_000;

/** Items after `last`, at most `n` of them; `next` is set when more remain. Items must be sorted. */
export function paginate(items: readonly string[], query: URLSearchParams): { page: string[]; n: number | undefined; next: string | undefined } {
  const last = query.get('last');
  const nRaw = query.get('n');
  let n: number | undefined;
  if (nRaw !== null && nRaw !== '') {
    n = Number(nRaw);
    if (!Number.isInteger(n) || n < 0) throw new RegistryError('UNSUPPORTED', `pagination parameter n="${nRaw.slice(0, 20)}" is not a non-negative integer`, { n: nRaw.slice(0, 20) }, 400);
    n = Math.min(n, MAX_PAGE);
  }
  const after = last ? items.filter((x) => x > last) : [...items];
  if (n === undefined || after.length <= n) return { page: after, n, next: undefined };
  const page = after.slice(0, n);
  return { page, n, next: page.at(-1) };
}

function linkHeader(path: string, n: number | undefined, next: string): string {
  return `<${path}?n=${n ?? ''}&last=${encodeURIComponent(next)}>; rel="next"`;
}

export async function listTags(call: Call): Promise<void> {
  if (call.target.kind !== 'tags') return;
  const { ctx, signal } = call;
  const name = call.target.name;
  const tags = [...(await ctx.store.listTags(name, { signal }))].sort();
  if (tags.length === 0 && (await ctx.store.listManifestLinks(name, { signal })).length === 0) {
    throw new RegistryError('NAME_UNKNOWN', `repository ${name} is not known to this registry`, { name });
  }
  const { page, n, next } = paginate(tags, call.query);
  if (next !== undefined && page.length > 0) call.reply.header('link', linkHeader(`/v2/${name}/tags/list`, n, next));
  call.reply.code(200).send({ name, tags: page });
}

export async function catalog(call: Call): Promise<void> {
  const { ctx, signal, identity } = call;
  let repos = [...(await ctx.store.listRepos({ signal }))].sort();
  // With auth on, the catalog shows only what the caller may pull (a name is information too).
  if (ctx.auth) {
    const auth = ctx.auth;
    repos = repos.filter((r) => auth.lists(identity, r));
  }
  const { page, n, next } = paginate(repos, call.query);
  if (next !== undefined && page.length > 0) call.reply.header('link', linkHeader('/v2/_catalog', n, next));
  call.reply.code(200).send({ repositories: page });
}

export async function referrers(call: Call): Promise<void> {
  if (call.target.kind !== 'referrers') return;
  const { ctx, signal } = call;
  const { name, digest } = call.target;
  let manifests = await ctx.links.listReferrers(name, digest, signal);
  const artifactType = call.query.get('artifactType');
  if (artifactType !== null) {
    manifests = manifests.filter((m) => m.artifactType === artifactType);
    call.reply.header('oci-filters-applied', 'artifactType');
  }
  call.reply.code(200).type(MediaTypes.ociIndex).send(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests })));
}
