// Where registry credentials come from, the way skopeo, podman and docker look them up, so a `docker login` or
// `podman login` already done on the machine is used as is. First match wins:
//   1. `--creds` / `--src-creds` / `--dest-creds USER:PASS` (explicit);
//   2. TRANSSHIP_REGISTRY_USER / TRANSSHIP_REGISTRY_PASSWORD (this project's variables, kept working);
//   3. the containers auth file: $REGISTRY_AUTH_FILE, else ${XDG_RUNTIME_DIR}/containers/auth.json, then
//      ~/.config/containers/auth.json;
//   4. docker's config: ${DOCKER_CONFIG:-~/.docker}/config.json.
// In each file: `credHelpers[host]` (a `docker-credential-<helper> get` run with the host on stdin), then an
// `auths` entry (the most specific of `host/namespace/repo`, …, `host`, `https://host`; `auth` is base64
// `user:pass`), then `credsStore` (a helper for every host). docker.io also matches docker's legacy key
// `https://index.docker.io/v1/`. Identity tokens (a helper answering Username `<token>`) are not supported: the
// user is told to log in with a password or token instead.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { TransshipError } from '@transship/core/errors';
import type { RegistryCredentials } from './registry-auth.js';

interface AuthFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string } | undefined>;
  credHelpers?: Record<string, string | undefined>;
  credsStore?: string;
}

/** The auth files to consult, in order (only those that exist are read). */
export function authFiles(env: NodeJS.ProcessEnv = process.env): string[] {
  const home = env.HOME ?? homedir();
  const files: string[] = [];
  if (env.REGISTRY_AUTH_FILE) files.push(env.REGISTRY_AUTH_FILE);
  else if (env.XDG_RUNTIME_DIR) files.push(join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json'));
  files.push(join(env.XDG_CONFIG_HOME ?? join(home, '.config'), 'containers', 'auth.json'));
  files.push(join(env.DOCKER_CONFIG ?? join(home, '.docker'), 'config.json'));
  return files;
}

/** Keys an entry for `registry` (and `repo`) may be filed under, most specific first. */
function candidateKeys(registry: string, repo: string | undefined): string[] {
  const keys: string[] = [];
  const parts = repo ? repo.split('/') : [];
  for (let i = parts.length; i > 0; i--) keys.push(`${registry}/${parts.slice(0, i).join('/')}`);
  keys.push(registry, `https://${registry}`, `http://${registry}`);
  if (registry === 'docker.io') keys.push('https://index.docker.io/v1/', 'index.docker.io', 'registry-1.docker.io');
  return keys;
}

export interface LookupOptions {
  /** Explicit `USER:PASS` credentials: nothing else is consulted. */
  explicit?: RegistryCredentials | undefined;
  env?: NodeJS.ProcessEnv | undefined;
  signal?: AbortSignal | undefined;
}

/** Credentials for `registry` (as named in the reference), or undefined for anonymous access. */
export async function lookupCredentials(registry: string, repo: string | undefined, opts: LookupOptions = {}): Promise<RegistryCredentials | undefined> {
  if (opts.explicit) return opts.explicit;
  const env = opts.env ?? process.env;
  if (env.TRANSSHIP_REGISTRY_USER !== undefined && env.TRANSSHIP_REGISTRY_PASSWORD !== undefined) {
    return { username: env.TRANSSHIP_REGISTRY_USER, password: env.TRANSSHIP_REGISTRY_PASSWORD };
  }
  for (const file of authFiles(env)) {
    const doc = await readAuthFile(file);
    if (!doc) continue;
    const helper = doc.credHelpers?.[registry] ?? (registry === 'docker.io' ? doc.credHelpers?.['index.docker.io'] : undefined);
    if (helper) return credentialHelper(helper, registry, env, opts.signal);
    for (const key of candidateKeys(registry, repo)) {
      const entry = doc.auths?.[key];
      if (!entry) continue;
      if (entry.username !== undefined && entry.password !== undefined) return { username: entry.username, password: entry.password };
      if (entry.auth) return fromBasicAuth(entry.auth, file, key);
    }
    if (doc.credsStore) {
      const found = await credentialHelper(doc.credsStore, registry, env, opts.signal, true);
      if (found) return found;
    }
  }
  return undefined;
}

async function readAuthFile(file: string): Promise<AuthFile | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw new TransshipError('TS_PERMISSION_DENIED', `cannot read the registry auth file ${file}: ${(err as Error).message}`, { cause: err, details: { file } });
  }
  try {
    const doc = JSON.parse(text) as unknown;
    return typeof doc === 'object' && doc !== null ? (doc) : {};
  } catch (err) {
    throw new TransshipError('TS_CONFIG_INVALID', `the registry auth file ${file} is not valid JSON`, { cause: err, details: { file } });
  }
}

function fromBasicAuth(auth: string, file: string, key: string): RegistryCredentials {
  const decoded = Buffer.from(auth, 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i <= 0) throw new TransshipError('TS_CONFIG_INVALID', `the "auth" of ${key} in ${file} is not base64 of USER:PASSWORD`, { details: { file, key } });
  return { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
}

/**
 * `docker-credential-<helper> get` with the server on stdin (the docker credential helper protocol). A helper
 * that does not know the server exits non-zero with "credentials not found": for a `credsStore` that means
 * anonymous, for a `credHelpers` entry too (the user configured it for this host, but has not logged in).
 */
function credentialHelper(helper: string, registry: string, env: NodeJS.ProcessEnv, signal: AbortSignal | undefined, quietMiss = false): Promise<RegistryCredentials | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(helper)) throw new TransshipError('TS_CONFIG_INVALID', `credential helper name "${helper}" is not a plain program suffix`, { details: { helper } });
  const program = `docker-credential-${helper}`;
  return new Promise((resolve, reject) => {
    const child = execFile(program, ['get'], { env, timeout: 30_000, maxBuffer: 1024 * 1024, ...(signal ? { signal } : {}) }, (err, stdout, stderr) => {
      if (err) {
        if (/credentials not found/i.test(`${stdout}${stderr}`) || (quietMiss && (err as NodeJS.ErrnoException).code !== 'ENOENT')) {
          resolve(undefined);
          return;
        }
        reject(new TransshipError('TS_UNAUTHORIZED', `credential helper ${program} failed for ${registry}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found on PATH' : (stderr || err.message).trim().split('\n')[0]}`, { cause: err, details: { helper: program, registry } }));
        return;
      }
      try {
        const doc = JSON.parse(stdout) as { Username?: unknown; Secret?: unknown };
        if (typeof doc.Username !== 'string' || typeof doc.Secret !== 'string') throw new Error('no Username/Secret');
        if (doc.Username === '<token>') {
          reject(new TransshipError('TS_UNAUTHORIZED', `${program} holds an identity token for ${registry}, which transship does not support: log in with a password or access token`, { details: { helper: program, registry } }));
          return;
        }
        resolve({ username: doc.Username, password: doc.Secret });
      } catch (e) {
        reject(new TransshipError('TS_UNAUTHORIZED', `credential helper ${program} answered with something other than {Username, Secret}`, { cause: e, details: { helper: program, registry } }));
      }
    });
    child.stdin?.end(registry);
  });
}
