// The `_state` token of a shared upload session: what any instance sharing the store needs to continue a session
// another instance started (its staged parts and the tail object beside them), carried by the client in the upload
// URL the way Distribution carries its own. The token is signed (HMAC-SHA256) so a client cannot point a session at
// another one's staged bytes, and it expires with the session's idle limit.
//
// Why a token and not a state object in the store: every PATCH would otherwise cost a read and a write of that
// object; the client already returns the Location of the last response with its next request (the distribution spec
// requires it), so the state travels for free. The bytes themselves are in the store (store/s3-staging.ts).
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ObjectDriver, Signalled } from '../store/contract.js';
import { UPLOAD_STATE_SECRET_KEY } from '../store/keys.js';
import { RegistryError } from './errors.js';

export interface UploadState {
  /** Repository the session belongs to. */
  repo: string;
  /** Session id (the uuid in the URL). */
  id: string;
  /** Bytes received so far. */
  size: number;
  /** Changes with every checkpoint: tells an instance whether its own copy of the session is still the latest. */
  version: string;
  /** When the session started (ms): a session lives at most MAX_SESSION_MS, below the staged-upload sweeps. */
  started: number;
  /** The token is refused after this (ms): the session's idle limit, counted from the response that carried it. */
  expires: number;
  /** The stage (S3 multipart upload) holding the first `staged.bytes`, if any; the rest is the tail object. */
  staged?: { uploadId: string; parts: number; bytes: number; etags?: string | undefined } | undefined;
  /** The session's bytes so far are exactly this blob, already in the store (then there is no tail object). */
  stored?: string | undefined;
  /**
   * The sha256 of the session's bytes so far, when the instance that wrote this state had hashed every one of them
   * (its stage's parts are then named by `staged.etags`): a PUT of that digest with no more bytes needs no read-back.
   */
  hashed?: string | undefined;
}

/** A shared session is refused after this long in total: staged uploads older than a day are swept as leftovers. */
export const MAX_SESSION_MS = 12 * 3600 * 1000;

// Short keys: the token rides in every Location header and request line.
interface Wire {
  r: string;
  i: string;
  n: number;
  v: string;
  t: number;
  e: number;
  u?: string;
  p?: number;
  b?: number;
  x?: string;
  d?: string;
  h?: string;
}

export class UploadStateCodec {
  constructor(private readonly secret: Buffer) {}

  encode(s: UploadState): string {
    const wire: Wire = { r: s.repo, i: s.id, n: s.size, v: s.version, t: s.started, e: s.expires, ...(s.staged ? { u: s.staged.uploadId, p: s.staged.parts, b: s.staged.bytes, ...(s.staged.etags ? { x: s.staged.etags } : {}) } : {}), ...(s.stored ? { d: s.stored } : {}), ...(s.hashed ? { h: s.hashed } : {}) };
    const body = Buffer.from(JSON.stringify(wire)).toString('base64url');
    return `${body}.${this.sign(body)}`;
  }

  /**
   * The state in `token` for session `id` of `repo`. Every way it can be wrong is BLOB_UPLOAD_UNKNOWN (404), what
   * clients read as "start this blob's upload again": altered, signed by another deployment, expired, another
   * session's.
   */
  decode(token: string, repo: string, id: string, now = Date.now()): UploadState {
    const unknown = (why: string): RegistryError => new RegistryError('BLOB_UPLOAD_UNKNOWN', `upload ${id.slice(0, 64)} cannot be continued: ${why}; start the upload again`, { id: id.slice(0, 64) });
    const [body, mac, extra] = token.split('.');
    if (!body || !mac || extra !== undefined) throw unknown('its state token is malformed');
    const expected = Buffer.from(this.sign(body));
    const given = Buffer.from(mac);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw unknown('its state token was not issued by this registry (altered, or signed with another upload secret)');
    let w: Wire;
    try {
      w = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as Wire;
    } catch {
      throw unknown('its state token is malformed');
    }
    if (w.r !== repo || w.i !== id) throw unknown('its state token belongs to another upload');
    if (now > w.e) throw unknown('the session expired (idle too long)');
    if (now - w.t > MAX_SESSION_MS) throw unknown(`the session is older than ${MAX_SESSION_MS / 3600_000} hours`);
    const staged = w.u !== undefined && w.p !== undefined && w.b !== undefined ? { uploadId: w.u, parts: w.p, bytes: w.b, etags: w.x } : undefined;
    return { repo: w.r, id: w.i, size: w.n, version: w.v, started: w.t, expires: w.e, staged, stored: w.d, hashed: w.h };
  }

  private sign(body: string): string {
    return createHmac('sha256', this.secret).update(body).digest('base64url');
  }
}

/**
 * The secret every instance sharing the store signs with: the configured one (serve.uploadSecret /
 * TRANSSHIP_UPLOAD_SECRET), or one generated once and kept in the store (`_keys/upload-state`, written
 * put-if-absent so concurrent first starts agree). Anyone who can read the bucket can read the generated one —
 * configure a secret when bucket readers must not be able to forge upload tokens (all a forged token can reach is
 * another session's staged bytes, and only with that session's unguessable ids: digests are still verified).
 */
export async function uploadStateSecret(objects: ObjectDriver, configured: string | undefined, opts: Signalled = {}): Promise<Buffer> {
  if (configured) return Buffer.from(configured, 'utf8');
  let stored = await objects.get(UPLOAD_STATE_SECRET_KEY, opts);
  if (stored === undefined) {
    await objects.putIfAbsent(UPLOAD_STATE_SECRET_KEY, randomBytes(32).toString('base64'), opts);
    stored = await objects.get(UPLOAD_STATE_SECRET_KEY, opts); // ours, or the one a concurrent first start wrote
  }
  if (!stored) throw new Error(`the upload state secret ${UPLOAD_STATE_SECRET_KEY} vanished from ${objects.name} right after it was written`);
  return Buffer.from(stored, 'base64');
}
