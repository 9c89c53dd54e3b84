// Retention rules: which tags and manifests of one repository a policy keeps (docs/gc.md "Policy deletions"). Pure:
// it sees what the mark read (tags with their push times, linked manifests with their kinds, children and subjects)
// and answers; the sweep acts. The vocabulary is the one users know — zot's keepTags/mostRecentlyPushedCount, Harbor's
// "retain the most recently pushed N" and tag patterns, ECR's "expire images older than D" and untagged expiry:
//   keepLast N            keep the N most recently pushed tags
//   keepTags [regex]      keep tags matching any pattern (whole tag)
//   removeOlderThan D     remove tags pushed more than D ago
//   untaggedExpireAfter D manifests no kept tag reaches expire D after they were linked
// Keep rules are OR'ed (a tag any of them protects stays); tags are removed only when the rule says how (keepLast or
// removeOlderThan) — keepTags alone only protects, so a rule can never delete every tag by omission. Without
// untaggedExpireAfter every linked manifest stays a root, as in Distribution without --delete-untagged.
// What is kept keeps what it reaches: an index its children (unlike Distribution's --delete-untagged, which deletes
// the children of multi-arch images), a subject its referrers (signatures, SBOMs), and cosign's tag scheme
// (`sha256-<hex>.sig|.att|.sbom`) follows its subject instead of counting as a tag of its own.
import { parseIdle } from '../placement/promoted.js';
import { globToRegExp } from '../placement/rules.js';

export interface RetentionRuleConfig {
  repos: string[];
  keepLast?: number | undefined;
  keepTags?: string[] | undefined;
  removeOlderThan?: string | undefined;
  untaggedExpireAfter?: string | undefined;
}

export interface RetentionRule {
  keepLast: number | undefined;
  keepTags: RegExp[];
  /** ms; Infinity = never. */
  removeOlderThanMs: number;
  untaggedExpireAfterMs: number;
}

export interface TagState {
  tag: string;
  digest: string;
  /** When the tag was last written (its object's lastModified), ms. */
  pushedAt: number;
}

export interface ManifestState {
  digest: string;
  /** When the manifest was linked to the repository (its link's lastModified), ms. */
  linkedAt: number;
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
      },
    }));
  }

  get empty(): boolean {
    return this.compiled.length === 0;
  }

  ruleFor(repo: string): RetentionRule | undefined {
    return this.compiled.find((c) => c.res.some((re) => re.test(repo)))?.rule;
  }
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
  const removesTags = rule !== undefined && (rule.keepLast !== undefined || Number.isFinite(rule.removeOlderThanMs));

  // Tags: cosign-scheme tags wait for their subject's fate; the others are ranked by push time, newest first.
  const plain = tags.filter((t) => cosignSubject(t.tag) === undefined).sort((a, b) => b.pushedAt - a.pushedAt || a.tag.localeCompare(b.tag));
  const kept: TagState[] = [];
  const removeTags: TagState[] = [];
  for (const [i, t] of plain.entries()) {
    const protectedTag =
      !removesTags ||
      (rule.keepLast !== undefined && i < rule.keepLast) ||
      rule.keepTags.some((re) => re.test(t.tag)) ||
      (Number.isFinite(rule.removeOlderThanMs) && now - t.pushedAt <= rule.removeOlderThanMs);
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
  for (const m of manifests) {
    if (keep.has(m.digest)) continue;
    // A referrer whose subject is linked here follows the subject, whatever its own age.
    if (m.subject !== undefined && byDigest.has(m.subject)) continue;
    if (now - m.linkedAt <= untaggedMs) visit(m.digest);
  }
  // Cosign-scheme tags: kept with their subject (or, when the subject is not linked here, by the plain rules).
  for (const t of tags) {
    const subject = cosignSubject(t.tag);
    if (subject === undefined) continue;
    if (keep.has(subject) || !byDigest.has(subject)) {
      if (!byDigest.has(subject) && removesTags && now - t.pushedAt > rule.removeOlderThanMs && !rule.keepTags.some((re) => re.test(t.tag))) removeTags.push(t);
      else visit(t.digest);
    } else removeTags.push(t);
  }
  const expire = manifests.filter((m) => !keep.has(m.digest)).map((m) => m.digest);
  return { removeTags, keep, expire };
}
