// Bearer tokens as the Docker token specification has them: a JWT whose claims are `iss`, `sub`, `aud` (the
// registry's service name), `exp`, `nbf`, `iat`, `jti` and `access: [{type, name, actions}]`. Two issuers:
//
// - transship's own `/token` endpoint (OwnTokens): HS256 with `serve.auth.tokenSecret`, so any instance with the
//   same secret accepts a token statelessly (without a secret: a random one, valid on this process only).
// - An external token service (ExternalTokens, `serve.auth.token`): docker_auth, GitLab, Harbor, Keycloak… sign
//   with their private key; we verify with their certificate (PEM; a token may carry an `x5c` chain that must end
//   at it) or their JWKS (a URL or a file). Only asymmetric algorithms are accepted from them, so a token can never
//   be "signed" with a public key used as an HMAC secret.
//
// Signatures, time claims and the JOSE details are the `jose` library's (no hand-written crypto); this file decides
// which keys and claims are acceptable and turns the `access` claim into grants.
import { X509Certificate, randomBytes, randomUUID, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SignJWT, createLocalJWKSet, createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions } from 'jose';
import { TransshipError } from '@transship/core/errors';

export interface TokenAccess {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenClaims {
  sub: string | undefined;
  access: TokenAccess[];
}

export interface TokenVerifier {
  /** The verified claims, or undefined for any token that is not acceptable (bad signature, expired, wrong audience…). */
  verify(token: string): Promise<TokenClaims | undefined>;
}

/** Configuration of an external token service (`serve.auth.token`). */
export interface ExternalTokenConfig {
  /** Where clients get tokens (the Bearer challenge's realm). */
  realm: string;
  /** Our name in the tokens' `aud` claim and the challenge's `service`. */
  service: string;
  /** The tokens' `iss` claim. */
  issuer: string;
  /** JWKS: an http(s) URL (fetched and cached by jose) or a file. */
  jwks?: string | undefined;
  /** PEM file with the issuer's certificate(s): tokens are signed by their key, or carry an x5c chain ending at one. */
  certificate?: string | undefined;
}

/** Clock skew tolerated between us and an issuer on `exp`, `nbf` and `iat`. */
const CLOCK_TOLERANCE_S = 30;
const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

/** The `access` claim, checked for shape: anything else in it makes the whole token unacceptable. */
function accessOf(payload: JWTPayload): TokenAccess[] | undefined {
  const raw = payload.access ?? [];
  if (!Array.isArray(raw)) return undefined;
  const out: TokenAccess[] = [];
  for (const a of raw as unknown[]) {
    const { type, name, actions } = (a ?? {}) as Record<string, unknown>;
    if (typeof type !== 'string' || typeof name !== 'string' || !Array.isArray(actions) || !actions.every((x) => typeof x === 'string')) return undefined;
    out.push({ type, name, actions: actions });
  }
  return out;
}

async function verifyWith(token: string, key: KeyObject | Uint8Array | JWTVerifyGetKey, options: JWTVerifyOptions): Promise<TokenClaims | undefined> {
  // Every failure of a token is the same answer (401 invalid_token); what was wrong is not the client's business.
  try {
    const { payload } = await jwtVerify(token, key as Uint8Array, { ...options, clockTolerance: CLOCK_TOLERANCE_S, requiredClaims: ['exp', ...(options.requiredClaims ?? [])] });
    const access = accessOf(payload);
    return access ? { sub: typeof payload.sub === 'string' && payload.sub !== '' ? payload.sub : undefined, access } : undefined;
  } catch (err) {
    if (err instanceof errors.JOSEError) return undefined;
    throw err;
  }
}

/** transship's own tokens (the /token endpoint). */
export class OwnTokens implements TokenVerifier {
  private readonly secret: Uint8Array;

  constructor(
    readonly service: string,
    secret: string | undefined,
    readonly ttlSeconds: number,
    readonly issuer = 'transship',
  ) {
    this.secret = secret ? Buffer.from(secret) : randomBytes(32);
  }

  sign(sub: string | undefined, access: TokenAccess[], now = Math.floor(Date.now() / 1000)): Promise<string> {
    const jwt = new SignJWT({ access })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(this.issuer)
      .setAudience(this.service)
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + this.ttlSeconds)
      .setJti(randomUUID());
    // Anonymous tokens have no subject (the spec's `sub` is the empty string or absent for them).
    if (sub !== undefined) jwt.setSubject(sub);
    return jwt.sign(this.secret);
  }

  verify(token: string): Promise<TokenClaims | undefined> {
    return verifyWith(token, this.secret, { issuer: this.issuer, audience: this.service, algorithms: ['HS256'] });
  }
}

/** Tokens of an external token service, verified with its certificate or JWKS. */
export class ExternalTokens implements TokenVerifier {
  private readonly jwks: JWTVerifyGetKey | undefined;
  private readonly roots: X509Certificate[];

  constructor(readonly config: ExternalTokenConfig) {
    if (Boolean(config.jwks) === Boolean(config.certificate)) {
      throw new TransshipError('TS_CONFIG_INVALID', 'serve.auth.token needs exactly one of jwks (URL or file) and certificate (PEM file)');
    }
    this.jwks = config.jwks ? jwksFrom(config.jwks) : undefined;
    this.roots = config.certificate ? certificatesFrom(config.certificate) : [];
  }

  async verify(token: string): Promise<TokenClaims | undefined> {
    const options: JWTVerifyOptions = { issuer: this.config.issuer, audience: this.config.service, algorithms: ASYMMETRIC };
    if (this.jwks) return verifyWith(token, this.jwks, options);
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      return undefined;
    }
    if (header.x5c !== undefined) {
      const leaf = this.chainedKey(header.x5c);
      return leaf ? verifyWith(token, leaf, options) : undefined;
    }
    // No chain in the token: one of the configured certificates' keys signed it (try each; there are few).
    for (const root of this.roots) {
      const claims = await verifyWith(token, root.publicKey, options);
      if (claims) return claims;
    }
    return undefined;
  }

  /** The leaf key of an x5c chain (leaf first) whose every link is valid now and which ends at a configured certificate. */
  private chainedKey(x5c: unknown): KeyObject | undefined {
    if (!Array.isArray(x5c) || x5c.length === 0 || x5c.length > 10) return undefined;
    let chain: X509Certificate[];
    try {
      chain = x5c.map((c) => new X509Certificate(Buffer.from(String(c), 'base64')));
    } catch {
      return undefined;
    }
    const now = Date.now();
    const current = (c: X509Certificate): boolean => Date.parse(c.validFrom) <= now + CLOCK_TOLERANCE_S * 1000 && now - CLOCK_TOLERANCE_S * 1000 <= Date.parse(c.validTo);
    for (const [i, cert] of chain.entries()) {
      if (!current(cert)) return undefined;
      const parent = chain[i + 1];
      if (parent && !(cert.checkIssued(parent) && cert.verify(parent.publicKey))) return undefined;
    }
    const top = chain[chain.length - 1]!;
    const anchored = this.roots.some((root) => root.fingerprint256 === top.fingerprint256 || (current(root) && top.checkIssued(root) && top.verify(root.publicKey)));
    return anchored ? chain[0]!.publicKey : undefined;
  }
}

function jwksFrom(source: string): JWTVerifyGetKey {
  if (/^https?:\/\//.test(source)) return createRemoteJWKSet(new URL(source));
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(source, 'utf8'));
  } catch (err) {
    throw new TransshipError('TS_CONFIG_INVALID', `serve.auth.token.jwks: cannot read a JWKS from ${source}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return createLocalJWKSet(json as Parameters<typeof createLocalJWKSet>[0]);
  } catch (err) {
    throw new TransshipError('TS_CONFIG_INVALID', `serve.auth.token.jwks: ${source} is not a JWK Set: ${(err as Error).message}`, { cause: err });
  }
}

function certificatesFrom(file: string): X509Certificate[] {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TransshipError('TS_CONFIG_INVALID', `serve.auth.token.certificate: cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new TransshipError('TS_CONFIG_INVALID', `serve.auth.token.certificate: ${file} holds no PEM certificate`);
  try {
    return blocks.map((b) => new X509Certificate(b));
  } catch (err) {
    throw new TransshipError('TS_CONFIG_INVALID', `serve.auth.token.certificate: ${file}: ${(err as Error).message}`, { cause: err });
  }
}
