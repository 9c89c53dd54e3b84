// Which upstream registry a request is for, and the client that talks to it.
//
// Two ways to name an upstream, because clients differ: containerd (hosts.toml mirror entries) keeps the image's
// own repository path and adds `?ns=<registry>` to every request; clients that cannot send `ns=` (skopeo, crane,
// docker pointed at a registry) put the upstream in the path: `/v2/<prefix>/<repo>/…`. Either way the content is
// stored under `<prefix>/<repo>`, so one upstream's `library/alpine` never mixes with another's or with a pushed
// `library/alpine`, and both ways read the same stored copy.
//
// Upstream fetches go through the existing docker:// client (transfer/sources/docker-registry.ts): Basic or the
// Bearer token flow (anonymous included), bounded reads, timeouts, the one observed retry. One client per upstream
// repository, kept a while, so a token is fetched once per scope and reused until it expires.
import { readFileSync } from 'node:fs';
import { parseDuration } from '@transship/core/duration';
import { ExpiringMap } from '@transship/core/expiring-map';
import { TransshipError } from '@transship/core/errors';
import { isValidRepoName } from '@transship/core/names';
import type { Config } from '../config/config.js';
import { globToRegExp } from '../placement/rules.js';
import { DockerRegistrySource, type DockerRegistryOptions } from '../transfer/sources/docker-registry.js';
import type { RegistryCredentials } from '../transfer/sources/registry-auth.js';

export type MirrorConfig = NonNullable<Config['mirror']>;
type UpstreamConfig = MirrorConfig['upstreams'][number];

/**
 * A mirror answers a waiting client: a few quick retries, then serve-stale or an error, rather than the minutes a
 * `copy` may spend on a flaky registry.
 */
const MIRROR_RETRY = { maxAttempts: 3, baseDelayMs: 100, maxDelayMs: 1000, maxElapsedMs: 5000 };

/** Default tag TTL: a moved tag is seen within 5 minutes, and a busy tag costs one HEAD per 5 minutes. */
export const DEFAULT_TAG_TTL_MS = 5 * 60_000;

export class Upstream {
  /** The registry's name as clients know it (what `ns=` carries); also the metrics label. */
  readonly registry: string;
  /** Stored names are `<prefix>/<upstream repository>`. */
  readonly prefix: string;
  readonly tagTtlMs: number;
  readonly allowPush: boolean;
  private readonly endpoint: string;
  private readonly insecure: boolean;
  private readonly repositories: RegExp[] | undefined;
  private readonly credentials: RegistryCredentials | undefined;
  private readonly clients = new ExpiringMap<DockerRegistrySource>({ ttlMs: 10 * 60_000, maxEntries: 1000 });

  constructor(
    c: UpstreamConfig,
    private readonly clientOptions: Omit<DockerRegistryOptions, 'credentials' | 'insecure'> = {},
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.registry = c.registry.toLowerCase();
    this.prefix = c.prefix ?? this.registry.replace(':', '-');
    if (!isValidRepoName(this.prefix)) {
      throw new TransshipError('TS_CONFIG_INVALID', `mirror upstream ${c.registry}: prefix "${this.prefix}" is not a valid repository name (lowercase components separated by "/"); set prefix:`);
    }
    // Docker Hub's API is not served at its registry name (what references and ns= say), but here.
    const url = new URL(c.url ?? (this.registry === 'docker.io' ? 'https://registry-1.docker.io' : `https://${c.registry}`));
    this.endpoint = url.host;
    this.insecure = url.protocol === 'http:';
    this.tagTtlMs = c.tagTtl !== undefined ? parseDuration(c.tagTtl, `mirror upstream ${c.registry}: tagTtl`, 'TS_CONFIG_INVALID') : DEFAULT_TAG_TTL_MS;
    this.allowPush = c.allowPush ?? false;
    this.repositories = c.repositories?.map(globToRegExp);
    this.credentials = c.credentials ? { username: c.credentials.username, password: passwordOf(c, env) } : undefined;
  }

  /** Does this upstream serve upstream repository `repo`? */
  serves(repo: string): boolean {
    return !this.repositories || this.repositories.some((re) => re.test(repo));
  }

  storedName(repo: string): string {
    return `${this.prefix}/${repo}`;
  }

  /** The client for one upstream repository (its token is cached for that repository's pull scope). */
  client(repo: string): DockerRegistrySource {
    const hit = this.clients.get(repo);
    if (hit) return hit;
    const source = new DockerRegistrySource(
      { transport: 'docker', registry: this.registry, endpoint: this.endpoint, repo, tag: 'latest' },
      { retry: MIRROR_RETRY, ...this.clientOptions, insecure: this.insecure, credentials: this.credentials, credentialsFromEnv: false, userAgent: 'transship-mirror' },
    );
    this.clients.set(repo, source);
    return source;
  }
}

/** The credential's password, from the config, a file or an environment variable (never logged). */
function passwordOf(c: UpstreamConfig, env: NodeJS.ProcessEnv): string {
  const cred = c.credentials!;
  if (cred.password !== undefined) return cred.password;
  if (cred.passwordFile !== undefined) {
    try {
      return readFileSync(cred.passwordFile, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new TransshipError('TS_CONFIG_INVALID', `mirror upstream ${c.registry}: cannot read passwordFile ${cred.passwordFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  const value = env[cred.passwordEnv ?? ''];
  if (value === undefined || value === '') throw new TransshipError('TS_CONFIG_INVALID', `mirror upstream ${c.registry}: environment variable ${cred.passwordEnv} is not set`);
  return value;
}

/** What a request in a mirrored repository is about. */
export interface MirrorRoute {
  upstream: Upstream;
  /** The repository on the upstream (`library/alpine`). */
  repo: string;
  /** Where it is stored here (`docker.io/library/alpine`). */
  name: string;
}

export class Upstreams {
  readonly all: Upstream[];

  constructor(config: MirrorConfig, clientOptions: Omit<DockerRegistryOptions, 'credentials' | 'insecure'> = {}, env: NodeJS.ProcessEnv = process.env) {
    this.all = config.upstreams.map((u) => new Upstream(u, clientOptions, env));
    const seen = new Map<string, string>();
    for (const u of this.all) {
      for (const key of [`registry ${u.registry}`, `prefix ${u.prefix}`]) {
        if (seen.has(key)) throw new TransshipError('TS_CONFIG_INVALID', `mirror: two upstreams share the ${key}`);
        seen.set(key, u.registry);
      }
    }
  }

  /**
   * The route of a request for repository `name` with query `ns` (containerd's parameter), or undefined when it is
   * not mirrored. `ns=` names the upstream and `name` is its repository; without it, the first path component(s)
   * of `name` must be an upstream's prefix. Docker Hub's one-component names (`alpine`) are `library/alpine`, as
   * every Docker Hub client spells them.
   */
  route(name: string, ns: string | null): MirrorRoute | undefined {
    if (ns !== null) {
      const upstream = this.all.find((u) => u.registry === ns.toLowerCase());
      if (!upstream) return undefined;
      const repo = upstream.registry === 'docker.io' && !name.includes('/') ? `library/${name}` : name;
      const stored = upstream.storedName(repo);
      if (!upstream.serves(repo) || !isValidRepoName(stored)) return undefined;
      return { upstream, repo, name: stored };
    }
    for (const upstream of this.all) {
      if (!name.startsWith(`${upstream.prefix}/`)) continue;
      const repo = name.slice(upstream.prefix.length + 1);
      if (!upstream.serves(repo)) return undefined;
      return { upstream, repo, name };
    }
    return undefined;
  }
}
