// Retention rules: which tags and manifests of one repository a policy keeps (docs/gc.md "Policy deletions"). Pure:
// it sees what the mark read (tags with their push times, linked manifests with their kinds, children and subjects)
// and answers; the sweep acts. The vocabulary is the one users know — zot's keepTags/mostRecentlyPushedCount, Harbor's
// "retain the most recently pushed N" and tag patterns, ECR's "expire images older than D" and untagged expiry:
//   keepLast N            keep the N most recently pushed tags
//   keepTags [regex]      keep tags matching any pattern (whole tag)
//   removeOlderThan D     remove tags pushed more than D ago
//   untaggedExpireAfter D manifests no kept tag reaches expire D after they were linked
//   pulledWithin D        remove tags neither pulled nor written (pushed, fetched by a mirror) within D — zot's
//                         pulledWithin, Harbor's proxy-cache expiry; a pull is a manifest GET through `serve`
//                         (registry/pulls.ts) of the tag's manifest or, for an index, of one of its children
// Keep rules are OR'ed (a tag any of them protects stays); tags are removed only when the rule says how (keepLast,
// removeOlderThan or pulledWithin) — keepTags alone only protects, so a rule can never delete every tag by omission.
// Without untaggedExpireAfter or pulledWithin every linked manifest stays a root, as in Distribution without
// --delete-untagged;
// pulledWithin applies to untagged manifests too (linked, or pulled by digest, within D), so a tag it removes frees
// its manifest and blobs in the same pass, and an image deployed by digest stays while it is pulled.
// What is kept keeps what it reaches: an index its children (unlike Distribution's --delete-untagged, which deletes
// the children of multi-arch images), a subject its referrers (signatures, SBOMs), and cosign's tag scheme
// (`sha256-<hex>.sig|.att|.sbom`) follows its subject instead of counting as a tag of its own.
import { parseIdle, stampPeriodMs } from '../placement/promoted.js';
import { globToRegExp } from '../placement/rules.js';

export interface RetentionRuleConfig {
  repos: string[];
  keepLast?: number | undefined;
  keepTags?: string[] | undefined;
  removeOlderThan?: string | undefined;
  untaggedExpireAfter?: string | undefined;
  pulledWithin?: string | undefined;
}

export interface RetentionRule {
  keepLast: number | undefined;
  keepTags: RegExp[];
  /** ms; Infinity = never. */
  removeOlderThanMs: number;
  untaggedExpireAfterMs: number;
  /** ms; Infinity = never. */
  pulledWithinMs: number;
}

export interface TagState {
  tag: string;
  digest: string;
  /** When the tag was last written (its object's lastModified), ms. */
  pushedAt: number;
  /** When its manifest (or a child of it) was last recorded pulled (pull markers' lastModified), ms; undefined = never. */
  pulledAt?: number | undefined;
}

export interface ManifestState {
  digest: string;
  /** When the manifest was linked to the repository (its link's lastModified), ms. */
  linkedAt: number;
  /** When it was last recorded pulled (its pull marker's lastModified), ms; undefined = never. */
  pulledAt?: number | undefined;
  /** Child manifests (an index). */
  children: readonly string[];
  /** The subject of a referrer (signature, SBOM…). */
  subject?: string | undefined;
}

export interface RetentionDecision {
  /** Tags the rule removes. */
  removeTags: TagState[];
  /** Linked manifests that stay roots. */
  keep: Set<string>;
  /** Linked manifests whose link the rule removes. */
  expire: string[];
}

/** Compiles and matches rules: the first rule whose `repos` glob matches a repository applies to it. */
export class RetentionRules {
  private readonly compiled: Array<{ res: RegExp[]; rule: RetentionRule }>;

  constructor(rules: readonly RetentionRuleConfig[] = []) {
    this.compiled = rules.map((r, i) => ({
      res: r.repos.map(globToRegExp),
      rule: {
        keepLast: r.keepLast,
        keepTags: (r.keepTags ?? []).map((p) => new RegExp(`^(?:${p})$`)),
        removeOlderThanMs: r.removeOlderThan ? parseIdle(r.removeOlderThan, `gc.retention.${i}.removeOlderThan`) : Number.POSITIVE_INFINITY,
        untaggedExpireAfterMs: r.untaggedExpireAfter ? parseIdle(r.untaggedExpireAfter, `gc.retention.${i}.untaggedExpireAfter`) : Number.POSITIVE_INFINITY,
        pulledWithinMs: r.pulledWithin ? parseIdle(r.pulledWithin, `gc.retention.${i}.pulledWithin`) : Number.POSITIVE_INFINITY,
      },
    }));
  }

  get empty(): boolean {
    return this.compiled.length === 0;
  }

  ruleFor(repo: string): RetentionRule | undefined {
    return this.compiled.find((c) => c.res.some((re) => re.test(repo)))?.rule;
  }

  /**
   * How often `serve` may write a pull marker per repository and manifest: an eighth of the shortest pulledWithin
   * (so a marker is at most D/8 older than the last pull), between a second and a day.
   */
  get pullStampMs(): number {
    return stampPeriodMs(Math.min(...this.compiled.map((c) => c.rule.pulledWithinMs)));
  }
}

/** Whether the rule's age rules (removeOlderThan, pulledWithin) say the tag is still in use; undefined = it has none. */
function recent(rule: RetentionRule, t: TagState, now: number): boolean | undefined {
  const byPush = Number.isFinite(rule.removeOlderThanMs) ? now - t.pushedAt <= rule.removeOlderThanMs : undefined;
  const byUse = Number.isFinite(rule.pulledWithinMs) ? now - Math.max(t.pushedAt, t.pulledAt ?? 0) <= rule.pulledWithinMs : undefined;
  return byPush === undefined && byUse === undefined ? undefined : Boolean(byPush) || Boolean(byUse);
}

const COSIGN_TAG = /^(sha256|sha512)-([a-f0-9]{64,128})\.(sig|att|sbom)$/;

/** The subject digest a cosign-scheme tag belongs to, or undefined. */
export function cosignSubject(tag: string): string | undefined {
  const m = COSIGN_TAG.exec(tag);
  return m ? `${m[1]}:${m[2]}` : undefined;
}

/**
 * Applies `rule` (undefined = no rule: nothing is removed) to one repository at time `now`. Tags pointing at
 * manifests that are not linked still count as roots (the caller marks them); they can be removed like any tag.
 */
export function decide(rule: RetentionRule | undefined, tags: readonly TagState[], manifests: readonly ManifestState[], now: number): RetentionDecision {
  const byDigest = new Map(manifests.map((m) => [m.digest, m] as const));
  const removesTags = rule !== undefined && (rule.keepLast !== undefined || Number.isFinite(rule.removeOlderThanMs) || Number.isFinite(rule.pulledWithinMs));

  // Tags: cosign-scheme tags wait for their subject's fate; the others are ranked by push time, newest first.
  const plain = tags.filter((t) => cosignSubject(t.tag) === undefined).sort((a, b) => b.pushedAt - a.pushedAt || a.tag.localeCompare(b.tag));
  const kept: TagState[] = [];
  const removeTags: TagState[] = [];
  for (const [i, t] of plain.entries()) {
    const protectedTag =
      !removesTags ||
      (rule.keepLast !== undefined && i < rule.keepLast) ||
      rule.keepTags.some((re) => re.test(t.tag)) ||
      recent(rule, t, now) === true;
    (protectedTag ? kept : removeTags).push(t);
  }

  // Manifests: closure from the kept tags (and, without untagged expiry, from every link) over children and
  // referrers; with untagged expiry, a manifest nothing kept reaches is a root only while younger than the limit.
  const keep = new Set<string>();
  const referrersOf = new Map<string, string[]>();
  for (const m of manifests) {
    if (m.subject === undefined) continue;
    const list = referrersOf.get(m.subject) ?? [];
    list.push(m.digest);
    referrersOf.set(m.subject, list);
  }
  const visit = (digest: string): void => {
    const stack = [digest];
    for (let d = stack.pop(); d !== undefined; d = stack.pop()) {
      if (keep.has(d)) continue;
      keep.add(d);
      const m = byDigest.get(d);
      if (m) stack.push(...m.children);
      stack.push(...(referrersOf.get(d) ?? []));
    }
  };
  for (const t of kept) visit(t.digest);
  const untaggedMs = rule?.untaggedExpireAfterMs ?? Number.POSITIVE_INFINITY;
  const pulledMs = rule?.pulledWithinMs ?? Number.POSITIVE_INFINITY;
  // Untagged, like tags: each age rule the rule has protects (OR); with neither, every link stays a root.
  const untaggedKept = (m: ManifestState): boolean =>
    (!Number.isFinite(untaggedMs) && !Number.isFinite(pulledMs)) ||
    (Number.isFinite(untaggedMs) && now - m.linkedAt <= untaggedMs) ||
    (Number.isFinite(pulledMs) && now - Math.max(m.linkedAt, m.pulledAt ?? 0) <= pulledMs);
  for (const m of manifests) {
    if (keep.has(m.digest)) continue;
    // A referrer whose subject is linked here follows the subject, whatever its own age.
    if (m.subject !== undefined && byDigest.has(m.subject)) continue;
    if (untaggedKept(m)) visit(m.digest);
  }
  // Cosign-scheme tags: kept with their subject (or, when the subject is not linked here, by the plain rules).
  for (const t of tags) {
    const subject = cosignSubject(t.tag);
    if (subject === undefined) continue;
    if (keep.has(subject) || !byDigest.has(subject)) {
      if (!byDigest.has(subject) && removesTags && recent(rule, t, now) === false && !rule.keepTags.some((re) => re.test(t.tag))) removeTags.push(t);
      else visit(t.digest);
    } else removeTags.push(t);
  }
  const expire = manifests.filter((m) => !keep.has(m.digest)).map((m) => m.digest);
  return { removeTags, keep, expire };
}
