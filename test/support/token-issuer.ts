// A stand-in for an external Docker token service (docker_auth, GitLab, Harbor, Keycloak) that runs as its own
// process with its own key, so the registry can only trust it through the certificate or JWKS it is configured with.
//
//   node --import tsx test/support/token-issuer.ts --key leaf.key --chain leaf.pem[,ca.pem] --issuer ISS --users alice:pw
//
// Endpoints (loopback only):
//   GET  /token?service=&scope=…   the token spec's endpoint: Basic credentials of --users (or none = anonymous);
//                                  grants the requested pull/push on repositories under `<user>/`, nothing else
//   GET  /jwks                     the signing key as a JWK Set (kid = its thumbprint)
//   POST /mint                     test hook: a token with exactly the claims in the JSON body (exp, aud, … as given)
// Tokens are ES256 with `kid` and an `x5c` chain (leaf first), as docker_auth signs them.
// `startTokenIssuer()` starts it as a child process for tests and stops only that process.
import { spawn, type ChildProcess } from 'node:child_process';
import { createPrivateKey, createPublicKey, randomUUID, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { SignJWT, calculateJwkThumbprint, exportJWK, type JWTPayload } from 'jose';
import { run } from './registry.js';

export interface TokenIssuer {
  url: string;
  /** The realm for `serve.auth.token`. */
  realm: string;
  jwks: string;
  /** A token with exactly these claims (iss defaults to the issuer's, exp to +5 min). */
  mint(claims: JWTPayload): Promise<string>;
  stop(): Promise<void>;
}

/** Signs like the issuer does: ES256, kid, x5c. Also used by tests to sign with a key the registry does not trust. */
export async function signToken(key: KeyObject, chain: X509Certificate[], claims: JWTPayload): Promise<string> {
  const jwk = await exportJWK(createPublicKey(key));
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: await calculateJwkThumbprint(jwk), x5c: chain.map((c) => c.raw.toString('base64')) })
    .sign(key);
}

/** A CA and an issuer certificate it signed (openssl), plus a second, unrelated self-signed key pair. */
export async function makeIssuerKeys(dir: string): Promise<{ caPem: string; leafKey: string; leafPem: string; otherKey: string; otherPem: string }> {
  const f = (n: string): string => `${dir}/${n}`;
  const steps: string[][] = [
    ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f('ca.key')],
    ['req', '-x509', '-new', '-key', f('ca.key'), '-subj', '/CN=transship test token CA', '-days', '2', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign', '-out', f('ca.pem')],
    ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f('leaf.key')],
    ['req', '-new', '-key', f('leaf.key'), '-subj', '/CN=transship test token issuer', '-out', f('leaf.csr')],
    ['x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-out', f('leaf.pem')],
    ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f('other.key')],
    ['req', '-x509', '-new', '-key', f('other.key'), '-subj', '/CN=transship test token issuer', '-days', '2', '-out', f('other.pem')],
  ];
  for (const args of steps) {
    const r = await run('openssl', args);
    if (r.code !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
  }
  return { caPem: f('ca.pem'), leafKey: f('leaf.key'), leafPem: f('leaf.pem'), otherKey: f('other.key'), otherPem: f('other.pem') };
}

export async function startTokenIssuer(opts: { key: string; chain: string[]; issuer: string; users: Record<string, string> }): Promise<TokenIssuer> {
  const users = Object.entries(opts.users).map(([u, p]) => `${u}:${p}`).join(',');
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--key', opts.key, '--chain', opts.chain.join(','), '--issuer', opts.issuer, '--users', users], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`token issuer did not start:\n${out}`)), 30_000);
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /issuer listening on (http:\/\/\S+)/.exec(out);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`token issuer exited:\n${out}`));
    });
  });
  return {
    url,
    realm: `${url}/token`,
    jwks: `${url}/jwks`,
    async mint(claims) {
      const r = await fetch(`${url}/mint`, { method: 'POST', body: JSON.stringify(claims) });
      if (!r.ok) throw new Error(`mint: ${r.status} ${await r.text()}`);
      return ((await r.json()) as { token: string }).token;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await exited;
    },
  };
}

// ---- the issuer process ----------------------------------------------------------------------------------------

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

async function serveIssuer(args: Map<string, string>): Promise<void> {
  const key = createPrivateKey(readFileSync(args.get('--key')!));
  const chain = args.get('--chain')!.split(',').map((p) => new X509Certificate(readFileSync(p)));
  const issuer = args.get('--issuer')!;
  const users = new Map((args.get('--users') ?? '').split(',').filter(Boolean).map((up) => [up.slice(0, up.indexOf(':')), up.slice(up.indexOf(':') + 1)] as [string, string]));
  const jwk = { ...(await exportJWK(createPublicKey(key))), alg: 'ES256', use: 'sig' };
  const jwks = { keys: [{ ...jwk, kid: await calculateJwkThumbprint(jwk) }] };
  const now = (): number => Math.floor(Date.now() / 1000);
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://issuer');
    const send = (status: number, json: unknown, headers: Record<string, string> = {}): void => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(json));
    };
    void (async () => {
      if (url.pathname === '/jwks') return send(200, jwks);
      if (url.pathname === '/mint' && req.method === 'POST') {
        const claims = JSON.parse(await body(req)) as JWTPayload;
        return send(200, { token: await signToken(key, chain, { iss: issuer, exp: now() + 300, ...claims }) });
      }
      if (url.pathname !== '/token') return send(404, {});
      let user: string | undefined;
      const auth = req.headers.authorization;
      if (auth?.startsWith('Basic ')) {
        const [u, p] = Buffer.from(auth.slice(6), 'base64').toString('utf8').split(':', 2);
        if (!u || users.get(u) !== p) return send(401, { details: 'bad credentials' }, { 'www-authenticate': 'Basic realm="issuer"' });
        user = u;
      }
      const access = url.searchParams
        .getAll('scope')
        .flatMap((s) => s.split(' '))
        .map((s) => s.split(':'))
        .filter((p) => p.length === 3 && p[0] === 'repository')
        .map(([type, name, actions]) => ({ type: type!, name: name!, actions: user && name!.startsWith(`${user}/`) ? actions!.split(',').filter((a) => a === 'pull' || a === 'push') : [] }));
      const token = await signToken(key, chain, { iss: issuer, sub: user ?? '', aud: url.searchParams.get('service') ?? '', iat: now(), nbf: now() - 5, exp: now() + 300, jti: randomUUID(), access });
      return send(200, { token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() });
    })().catch((err: unknown) => send(500, { error: String(err) }));
  });
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`issuer listening on http://127.0.0.1:${(server.address() as { port: number }).port}\n`);
  });
  process.once('SIGTERM', () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const argv = process.argv.slice(2);
  const args = new Map<string, string>();
  for (let i = 0; i + 1 < argv.length; i += 2) args.set(argv[i]!, argv[i + 1]!);
  await serveIssuer(args);
}
