// Password hashes for Basic credentials (htpasswd files and `serve.auth.users`):
//   $2y$ / $2a$ / $2b$ bcrypt                                  `htpasswd -B` (what Distribution accepts); recommended
//   {SSHA256}<base64(sha256(password ‖ salt) ‖ salt)>          salted sha256, from older transship configs
//   {SHA}<base64(sha1(password))>                              `htpasswd -s`: unsalted, readable with a warning
// Anything else (crypt, MD5 `$apr1$`, plain text) is refused at load time with a message, never silently accepted.
//
// bcrypt comes from bcryptjs (pure JavaScript, no dependencies, no native build): a hand-written bcrypt is exactly the
// kind of field problem a well-kept library should solve. Its async compare yields to the event loop between rounds,
// so a login costs other requests nothing; a successful check is remembered for a while (see Credentials) because
// clients sending Basic credentials send them on every request, and bcrypt is slow on purpose.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { TransshipError } from '@transship/core/errors';
import { log } from '@transship/core/log';
import { ExpiringMap } from '@transship/core/expiring-map';

/** bcrypt cost for hashes transship makes (`serve --hash-password`): 2^10 rounds, ~70 ms in bcryptjs. */
export const BCRYPT_COST = 10;

const BCRYPT = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;

export type HashScheme = 'bcrypt' | 'ssha256' | 'sha1';

export function hashScheme(stored: string): HashScheme | undefined {
  if (BCRYPT.test(stored)) return 'bcrypt';
  if (stored.startsWith('{SSHA256}')) return 'ssha256';
  if (stored.startsWith('{SHA}')) return 'sha1';
  return undefined;
}

/** A bcrypt hash in htpasswd's `$2y$` spelling (the same algorithm as `$2b$`; Distribution and Apache read both). */
export function hashPassword(password: string, cost = BCRYPT_COST): string {
  return bcrypt.hashSync(password, bcrypt.genSaltSync(cost)).replace(/^\$2b\$/, '$2y$');
}

/** The older salted-sha256 format, still accepted; kept for tests of configs that carry it. */
export function hashPasswordSsha256(password: string, salt: Buffer = randomBytes(16)): string {
  const digest = createHash('sha256').update(password).update(salt).digest();
  return `{SSHA256}${Buffer.concat([digest, salt]).toString('base64')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  switch (hashScheme(stored)) {
    case 'bcrypt':
      // bcryptjs knows $2a$/$2b$/$2y$ alike; it never throws for a well-formed hash (checked by hashScheme).
      return bcrypt.compare(password, stored);
    case 'ssha256': {
      const raw = Buffer.from(stored.slice(9), 'base64');
      if (raw.length <= 32) return false;
      const salt = raw.subarray(32);
      return safeEqual(createHash('sha256').update(password).update(salt).digest(), raw.subarray(0, 32));
    }
    case 'sha1':
      return safeEqual(createHash('sha1').update(password).digest(), Buffer.from(stored.slice(5), 'base64'));
    default:
      return false;
  }
}

function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function checkHashScheme(user: string, hash: string, source: string): HashScheme {
  const scheme = hashScheme(hash);
  if (!scheme) {
    throw new TransshipError(
      'TS_CONFIG_INVALID',
      `${source}: user "${user}" has an unsupported password hash (${hash.slice(0, 4)}…); use bcrypt (htpasswd -B, or transship serve --hash-password), {SSHA256} or {SHA}`,
    );
  }
  return scheme;
}

export function parseHtpasswd(text: string, source: string): Map<string, string> {
  const users = new Map<string, string>();
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new TransshipError('TS_CONFIG_INVALID', `${source}:${i + 1}: expected "user:hash"`);
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    checkHashScheme(user, hash, `${source}:${i + 1}`);
    users.set(user, hash);
  }
  return users;
}

/** Verified users and their hashes; checks Basic credentials. */
export class Credentials {
  private readonly users = new Map<string, string>();
  /** sha256(user, password, hash) of credentials that checked out: a repeat costs a hash, not a bcrypt. */
  private readonly verified = new ExpiringMap<true>({ ttlMs: 5 * 60_000, maxEntries: 10_000 });
  /** Compared against for unknown users, so response time does not tell which users exist. */
  private decoy = '{SSHA256}' + Buffer.alloc(48).toString('base64');

  /** Adds users (later sources override earlier ones); `source` names them in messages. */
  add(users: Iterable<[string, string]>, source: string): void {
    const weak: string[] = [];
    for (const [user, hash] of users) {
      const scheme = checkHashScheme(user, hash, source);
      if (scheme === 'sha1') weak.push(user);
      if (scheme === 'bcrypt') this.decoy = hash;
      this.users.set(user, hash);
    }
    if (weak.length) {
      log.warn({ source, users: weak.slice(0, 20), count: weak.length }, 'password hashes in {SHA} format (unsalted SHA-1) are accepted but weak; re-create them with `htpasswd -B` (bcrypt)');
    }
  }

  get size(): number {
    return this.users.size;
  }

  /** Basic credentials (the base64 part of the header) → user name, or undefined when they do not check out. */
  async check(value: string): Promise<string | undefined> {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) return undefined;
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const stored = this.users.get(user);
    if (!stored) {
      await verifyPassword(password, this.decoy);
      return undefined;
    }
    const key = createHash('sha256').update(user).update('\0').update(password).update('\0').update(stored).digest('base64');
    if (this.verified.get(key)) return user;
    if (!(await verifyPassword(password, stored))) return undefined;
    this.verified.set(key, true);
    return user;
  }
}
