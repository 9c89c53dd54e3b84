// Authentication and per-repository authorization. Off unless `serve.auth` is configured.
//
// - Users come from an htpasswd file and/or the config; hashes are bcrypt (recommended), {SSHA256} or {SHA}
//   (passwords.ts).
// - Clients may send Basic credentials on every request, or follow the docker token flow: a 401 carries
//   `WWW-Authenticate: Bearer realm=<our /token>,service=…,scope=…`, the client calls /token with Basic
//   credentials (or none, for anonymous access) and gets an HMAC-SHA256-signed token listing the granted
//   `repository:<name>:<actions>`; the token is checked statelessly, so any instance with the same secret accepts it.
// - Access rules in the config grant `pull`/`push`/`delete` on repository patterns to users (`*` = any
//   authenticated user, `anonymous` = no credentials). `*` in a pattern matches any characters including `/`;
//   `{user}` stands for the user's name, matched literally (see patternToRegExp).
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { TransshipError } from '../core/errors.js';
import { isValidRepoName } from '../core/names.js';
import { RegistryError } from './errors.js';
import { Credentials, parseHtpasswd } from './passwords.js';

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
}

export type Identity =
  | { kind: 'anonymous' }
  | { kind: 'basic'; user: string }
  | { kind: 'bearer'; user: string | undefined; grants: Map<string, Set<string>> };

interface TokenClaims {
  iss: string;
  sub: string | null;
  aud: string;
  iat: number;
  exp: number;
  access: Array<{ type: string; name: string; actions: string[] }>;
}

const ANONYMOUS = 'anonymous';

function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

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
  private readonly credentials = new Credentials();
  private readonly secret: Buffer;
  private readonly ttl: number;

  constructor(readonly config: AuthConfig) {
    this.service = config.service ?? 'transship';
    this.ttl = config.tokenTtlSeconds ?? 300;
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
    // Without a configured secret, tokens are only valid on this process (fine for one instance; say so in docs).
    this.secret = config.tokenSecret ? Buffer.from(config.tokenSecret) : randomBytes(32);
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
      if (!user) throw this.challenge(realm, undefined, 'invalid username or password');
      return { kind: 'basic', user };
    }
    if (scheme === 'bearer') {
      const claims = this.verifyToken(value);
      if (!claims) throw this.challenge(realm, undefined, 'invalid or expired token', 'invalid_token');
      const grants = new Map<string, Set<string>>();
      for (const a of claims.access) if (a.type === 'repository') grants.set(a.name, new Set(a.actions));
      return { kind: 'bearer', user: claims.sub ?? undefined, grants };
    }
    throw this.challenge(realm, undefined, `unsupported authorization scheme "${scheme.slice(0, 20)}"`);
  }

  /** Throws 401 (with a challenge naming the scope) or 403 unless `identity` may do `action` on `repo`. */
  authorize(identity: Identity, repo: string, action: Action, realm: string): void {
    if (this.can(identity, repo, action)) return;
    const user = identity.kind === 'anonymous' ? undefined : identity.user;
    // Ask for (new) credentials when they could help: anonymous (also an anonymous token), or a token that lacks a
    // scope its user would get. A known user who is simply not allowed gets 403.
    if (identity.kind === 'anonymous' || (identity.kind === 'bearer' && (user === undefined || this.allowed(user, repo, action)))) {
      throw this.challenge(realm, `repository:${repo}:${action === 'pull' ? 'pull' : `pull,${action}`}`, 'authentication required', identity.kind === 'bearer' ? 'insufficient_scope' : undefined);
    }
    throw new RegistryError('DENIED', `requested access to ${repo} (${action}) is denied`, { repository: repo, action });
  }

  can(identity: Identity, repo: string, action: Action): boolean {
    if (identity.kind === 'bearer') return identity.grants.get(repo)?.has(action) === true;
    return this.allowed(identity.kind === 'basic' ? identity.user : undefined, repo, action);
  }

  /** The repositories' user, for filtering listings. */
  userOf(identity: Identity): string | undefined {
    return identity.kind === 'anonymous' ? undefined : identity.user;
  }

  challenge(realm: string, scope: string | undefined, message: string, error?: string): RegistryError {
    const value = this.config.basicOnly
      ? `Basic realm="${this.service}"`
      : `Bearer realm="${realm}",service="${this.service}"${scope ? `,scope="${scope}"` : ''}${error ? `,error="${error}"` : ''}`;
    return new RegistryError('UNAUTHORIZED', message, scope ? { scope } : {}, 401, { 'www-authenticate': value });
  }

  /** The /token endpoint: grants the requested scopes the (optional) Basic user is allowed, signs them. */
  async issueToken(authorization: string | undefined, scopes: string[], realm: string): Promise<{ token: string; access_token: string; expires_in: number; issued_at: string }> {
    let user: string | undefined;
    if (authorization) {
      const [scheme, value] = authorization.split(' ', 2);
      if (scheme?.toLowerCase() !== 'basic' || !value) throw this.challenge(realm, undefined, 'the token endpoint takes Basic credentials');
      user = await this.credentials.check(value);
      if (!user) throw new RegistryError('UNAUTHORIZED', 'invalid username or password', {}, 401, { 'www-authenticate': `Basic realm="${this.service}"` });
    }
    const access: TokenClaims['access'] = [];
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
    const claims: TokenClaims = { iss: 'transship', sub: user ?? null, aud: this.service, iat: now, exp: now + this.ttl, access };
    const token = this.sign(claims);
    return { token, access_token: token, expires_in: this.ttl, issued_at: new Date(now * 1000).toISOString() };
  }

  private sign(claims: TokenClaims): string {
    const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
    const mac = createHmac('sha256', this.secret).update(payload).digest('base64url');
    return `${payload}.${mac}`;
  }

  verifyToken(token: string): TokenClaims | undefined {
    const dot = token.indexOf('.');
    if (dot <= 0) return undefined;
    const payload = token.slice(0, dot);
    const mac = Buffer.from(token.slice(dot + 1), 'base64url');
    if (!safeEqual(createHmac('sha256', this.secret).update(payload).digest(), mac)) return undefined;
    try {
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as TokenClaims;
      if (claims.aud !== this.service || typeof claims.exp !== 'number' || claims.exp < Date.now() / 1000 || !Array.isArray(claims.access)) return undefined;
      return claims;
    } catch {
      return undefined;
    }
  }
}
