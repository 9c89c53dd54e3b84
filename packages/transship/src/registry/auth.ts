// Authentication and per-repository authorization. Off unless `serve.auth` is configured.
//
// - Users come from an htpasswd file and/or the config; hashes are bcrypt (recommended), {SSHA256} or {SHA}
//   (passwords.ts).
// - Clients may send Basic credentials on every request, or follow the Docker token flow: a 401 carries
//   `WWW-Authenticate: Bearer realm=…,service=…,scope=…`, the client gets a JWT from the realm and sends it
//   (tokens.ts). The realm is either transship's own /token (Basic credentials or none → the requested scopes its
//   access rules grant, HS256-signed with `tokenSecret`, checked statelessly by any instance with the same secret),
//   or an external token service (`auth.token`: docker_auth, GitLab, Harbor, Keycloak), whose tokens are verified
//   with its certificate or JWKS and whose `access` claim alone decides what a token may do.
// - Access rules in the config grant `pull`/`push`/`delete` on repository patterns to users (`*` = any
//   authenticated user, `anonymous` = no credentials). `*` in a pattern matches any characters including `/`;
//   `{user}` stands for the user's name, matched literally (see patternToRegExp).
import { readFileSync } from 'node:fs';
import { TransshipError } from '@transship/core/errors';
import { isValidRepoName } from '@transship/core/names';
import { RegistryError } from './errors.js';
import { Credentials, parseHtpasswd } from './passwords.js';
import { ExternalTokens, OwnTokens, type ExternalTokenConfig, type TokenAccess, type TokenVerifier } from './tokens.js';

export { hashPassword, verifyPassword, parseHtpasswd } from './passwords.js';

export type Action = 'pull' | 'push' | 'delete';

export interface AccessRule {
  users: string[];
  repositories: string[];
  actions: Action[];
}

export interface AuthConfig {
  realm?: string | undefined;
  service?: string | undefined;
  tokenSecret?: string | undefined;
  tokenTtlSeconds?: number | undefined;
  htpasswd?: string | undefined;
  users?: Record<string, string> | undefined;
  access?: AccessRule[] | undefined;
  /** Challenge with Basic instead of Bearer (no token round trip; credentials on every request). */
  basicOnly?: boolean | undefined;
  /** Tokens come from an external token service (replaces transship's own /token). */
  token?: ExternalTokenConfig | undefined;
}

export type Identity =
  | { kind: 'anonymous' }
  | { kind: 'basic'; user: string }
  | {
      kind: 'bearer';
      user: string | undefined;
      /** repository name → actions the token grants there (an entry with no actions: asked for and refused). */
      grants: Map<string, Set<string>>;
      /** The token grants `registry:catalog:*`. */
      catalog: boolean;
    };

const ANONYMOUS = 'anonymous';

/** A user name `{user}` can stand for: one repository path component, so it can neither add segments nor globs. */
const isNamespace = (user: string): boolean => !user.includes('/') && isValidRepoName(user);

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * A repository pattern as a RegExp. `*` is the only glob and comes from the pattern alone: `{user}` is matched as
 * the literal user name (escaped), so a user called "b*" gets the literal prefix "b*" + "/", which no valid
 * repository name has — never "bob/…". A user whose name is not a single repository component (contains `/`, uppercase, glob characters…)
 * matches no `{user}` pattern at all: `{user}` means "a namespace named after you", and such a name has none.
 */
export function patternToRegExp(pattern: string, user: string | undefined): RegExp | undefined {
  const hasUser = pattern.includes('{user}');
  if (hasUser && (user === undefined || !isNamespace(user))) return undefined;
  const source = pattern
    .split('{user}')
    .map((part) => part.split('*').map(escapeRegExp).join('.*'))
    .join(escapeRegExp(user ?? ''));
  return new RegExp(`^${source}$`);
}

export class Authenticator {
  readonly service: string;
  /** Set when an external token service issues the tokens (`auth.token`); transship then serves no /token. */
  readonly external: ExternalTokens | undefined;
  readonly own: OwnTokens | undefined;
  private readonly tokens: TokenVerifier;
  private readonly credentials = new Credentials();

  constructor(readonly config: AuthConfig) {
    if (config.htpasswd) {
      let text: string;
      try {
        text = readFileSync(config.htpasswd, 'utf8');
      } catch (err) {
        throw new TransshipError('TS_CONFIG_INVALID', `cannot read htpasswd file ${config.htpasswd}: ${(err as Error).message}`, { cause: err });
      }
      this.credentials.add(parseHtpasswd(text, config.htpasswd), config.htpasswd);
    }
    this.credentials.add(Object.entries(config.users ?? {}), 'serve.auth.users');
    if (config.token) {
      this.external = new ExternalTokens(config.token);
      this.service = config.token.service;
      this.tokens = this.external;
    } else {
      this.service = config.service ?? 'transship';
      // Without a configured secret, tokens are only valid on this process (fine for one instance; docs say so).
      this.own = new OwnTokens(this.service, config.tokenSecret, config.tokenTtlSeconds ?? 300);
      this.tokens = this.own;
    }
  }

  /** The realm clients get tokens from: the external service's, the configured one, or `fallback` (our /token). */
  realm(fallback: string): string {
    return this.config.token?.realm ?? this.config.realm ?? fallback;
  }

  /** Whether config rules let `user` (undefined = anonymous) do `action` on `repo`. */
  allowed(user: string | undefined, repo: string, action: Action): boolean {
    for (const rule of this.config.access ?? []) {
      if (!rule.actions.includes(action)) continue;
      const who = rule.users.some((u) => (u === ANONYMOUS ? user === undefined : u === '*' ? user !== undefined : u === user));
      if (!who) continue;
      if (rule.repositories.some((p) => patternToRegExp(p, user)?.test(repo))) return true;
    }
    return false;
  }

  /** Identity from an Authorization header. Wrong credentials are a 401, never a silent anonymous. */
  async identify(header: string | undefined, realm: string): Promise<Identity> {
    if (!header) return { kind: 'anonymous' };
    const space = header.indexOf(' ');
    const scheme = header.slice(0, space === -1 ? undefined : space).toLowerCase();
    const value = space === -1 ? '' : header.slice(space + 1).trim();
    if (scheme === 'basic') {
      const user = await this.credentials.check(value);
      if (!user) throw this.challenge(realm, [], 'invalid username or password');
      return { kind: 'basic', user };
    }
    if (scheme === 'bearer') {
      const claims = await this.tokens.verify(value);
      if (!claims) throw this.challenge(realm, [], 'invalid or expired token', 'invalid_token');
      const grants = new Map<string, Set<string>>();
      let catalog = false;
      for (const a of claims.access) {
        if (a.type === 'repository') grants.set(a.name, new Set([...(grants.get(a.name) ?? []), ...a.actions]));
        if (a.type === 'registry' && a.name === 'catalog' && a.actions.includes('*')) catalog = true;
      }
      return { kind: 'bearer', user: claims.sub, grants, catalog };
    }
    throw this.challenge(realm, [], `unsupported authorization scheme "${scheme.slice(0, 20)}"`);
  }

  /** Throws 401 (with a challenge naming the scope) or 403 unless `identity` may do `action` on `repo`. */
  authorize(identity: Identity, repo: string, action: Action, realm: string): void {
    if (this.can(identity, repo, action)) return;
    // Ask for (new) credentials when they could help: anonymous (also an anonymous token), a token that lacks a
    // scope its user would get, or any token of an external service (only it knows what it would grant). A known
    // user who is simply not allowed gets 403.
    if (this.couldGet(identity, repo, action)) {
      throw this.challenge(realm, [scopeOf(repo, action)], 'authentication required', identity.kind === 'bearer' ? 'insufficient_scope' : undefined);
    }
    throw new RegistryError('DENIED', `requested access to ${repo} (${action}) is denied`, { repository: repo, action });
  }

  /**
   * A cross-repository mount (`POST …/blobs/uploads/?mount=D&from=R`) needs pull on R as well. A token without it is
   * challenged for both scopes (as Distribution does), so a client that follows challenges gets a token that can
   * mount; a token that already asked for R and was refused, or a caller who could never get it, is let through
   * to the upload fallback (202) instead of being challenged in a loop.
   */
  authorizeMount(identity: Identity, repo: string, from: string, realm: string): void {
    if (identity.kind !== 'bearer' || identity.grants.has(from) || !this.couldGet(identity, from, 'pull')) return;
    throw this.challenge(realm, [scopeOf(repo, 'push'), scopeOf(from, 'pull')], 'authentication required', 'insufficient_scope');
  }

  /** Whether a new token (or credentials) might grant `action` on `repo` to this caller. */
  couldGet(identity: Identity, repo: string, action: Action): boolean {
    if (identity.kind === 'anonymous') return true;
    if (identity.kind === 'basic') return false;
    return this.external !== undefined || identity.user === undefined || this.allowed(identity.user, repo, action);
  }

  can(identity: Identity, repo: string, action: Action): boolean {
    if (identity.kind === 'bearer') return identity.grants.get(repo)?.has(action) === true;
    return this.allowed(identity.kind === 'basic' ? identity.user : undefined, repo, action);
  }

  /** Whether the catalog shows `repo` to this caller (a name is information too). */
  lists(identity: Identity, repo: string): boolean {
    // An external service's token carries no rules of ours: its registry:catalog grant (or a grant on the
    // repository) is what it allows.
    if (this.external && identity.kind === 'bearer') return identity.catalog || identity.grants.get(repo)?.has('pull') === true;
    return this.allowed(identity.kind === 'anonymous' ? undefined : identity.user, repo, 'pull');
  }

  /** A 401 with the challenge for `scopes` (space-separated in one `scope`, as Distribution sends them). */
  challenge(realm: string, scopes: string[], message: string, error?: string): RegistryError {
    const scope = scopes.join(' ');
    const value = this.config.basicOnly
      ? `Basic realm="${this.service}"`
      : `Bearer realm="${realm}",service="${this.service}"${scope ? `,scope="${scope}"` : ''}${error ? `,error="${error}"` : ''}`;
    return new RegistryError('UNAUTHORIZED', message, scope ? { scope } : {}, 401, { 'www-authenticate': value });
  }

  /** The /token endpoint: grants the requested scopes the (optional) Basic user is allowed, signs them. */
  async issueToken(authorization: string | undefined, scopes: string[], realm: string): Promise<{ token: string; access_token: string; expires_in: number; issued_at: string }> {
    const own = this.own;
    if (!own) throw new RegistryError('UNSUPPORTED', `tokens are issued by ${this.config.token?.realm ?? 'an external service'}`, {}, 404);
    let user: string | undefined;
    if (authorization) {
      const [scheme, value] = authorization.split(' ', 2);
      if (scheme?.toLowerCase() !== 'basic' || !value) throw this.challenge(realm, [], 'the token endpoint takes Basic credentials');
      user = await this.credentials.check(value);
      if (!user) throw new RegistryError('UNAUTHORIZED', 'invalid username or password', {}, 401, { 'www-authenticate': `Basic realm="${this.service}"` });
    }
    const access: TokenAccess[] = [];
    for (const scope of scopes) {
      // repository:<name>:<actions>; names contain no ':' (the grammar forbids it), so split from the ends.
      const first = scope.indexOf(':');
      const last = scope.lastIndexOf(':');
      if (first === -1 || first === last) continue;
      const type = scope.slice(0, first);
      const name = scope.slice(first + 1, last);
      const wanted = scope.slice(last + 1).split(',');
      if (type === 'registry' && name === 'catalog') {
        access.push({ type, name, actions: ['*'] });
        continue;
      }
      if (type !== 'repository') continue;
      const granted = wanted.flatMap((a) => (a === '*' ? ['pull', 'push', 'delete'] : [a])).filter((a): a is Action => (a === 'pull' || a === 'push' || a === 'delete') && this.allowed(user, name, a));
      access.push({ type, name, actions: [...new Set(granted)] });
    }
    const now = Math.floor(Date.now() / 1000);
    const token = await own.sign(user, access, now);
    return { token, access_token: token, expires_in: own.ttlSeconds, issued_at: new Date(now * 1000).toISOString() };
  }
}

/** The scope a client asks for to do `action` on `repo` (pushing needs pull too: clients HEAD before they upload). */
export function scopeOf(repo: string, action: Action): string {
  return `repository:${repo}:${action === 'pull' ? 'pull' : `pull,${action}`}`;
}
