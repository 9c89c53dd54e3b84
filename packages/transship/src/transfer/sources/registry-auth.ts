// Registry authentication as the distribution token spec describes it: a 401 carries
// `WWW-Authenticate: Bearer realm=…,service=…,scope=…`; we fetch a token from the realm (anonymously, or with
// basic credentials) and retry the request with `Authorization: Bearer`. `Basic` challenges get the credentials
// directly. Tokens are cached per scope for their lifetime so a copy asks once, not per blob.
import { TransshipError } from '@transship/core/errors';

export interface RegistryCredentials {
  username: string;
  password: string;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses one WWW-Authenticate header value (quoted strings may contain commas). */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z][A-Za-z0-9_-]*)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]*)/g;
  for (let p = re.exec(m[2] ?? ''); p !== null; p = re.exec(m[2] ?? '')) {
    const key = (p[1] ?? '').toLowerCase();
    params[key] = p[3] !== undefined ? p[3].replace(/\\(.)/g, '$1') : (p[2] ?? '');
  }
  return { scheme: (m[1] ?? '').toLowerCase(), params };
}

/** Credentials from options, else TRANSSHIP_REGISTRY_USER / TRANSSHIP_REGISTRY_PASSWORD. */
export function credentialsFrom(opt: RegistryCredentials | undefined, env: NodeJS.ProcessEnv = process.env): RegistryCredentials | undefined {
  if (opt) return opt;
  const username = env.TRANSSHIP_REGISTRY_USER;
  const password = env.TRANSSHIP_REGISTRY_PASSWORD;
  return username !== undefined && password !== undefined ? { username, password } : undefined;
}

export function basicHeader(c: RegistryCredentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

export interface CachedToken {
  header: string;
  expiresAt: number;
}

/** Reads a token response ({token} or {access_token}, expires_in seconds; 60 s when absent, per the spec). */
export function tokenFromResponse(body: unknown, now = Date.now()): CachedToken {
  const doc = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  const token = typeof doc.token === 'string' ? doc.token : typeof doc.access_token === 'string' ? doc.access_token : undefined;
  if (!token) throw new TransshipError('TS_UNAUTHORIZED', 'the registry token service answered without a token');
  const expiresIn = typeof doc.expires_in === 'number' && doc.expires_in > 0 ? doc.expires_in : 60;
  // Renew a little early so a token never expires between our check and the registry's.
  return { header: `Bearer ${token}`, expiresAt: now + Math.max(1, expiresIn - 10) * 1000 };
}
