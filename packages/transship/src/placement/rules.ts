// Placement rules: which repositories go where, and why. First matching rule wins; with no match a repository is
// `demand` (lazy fetch, promotion after measured remote reads), which is the cheap default.
import type { Config } from '../config/config.js';
import { DEFAULT_PRICES, breakEvenResidencyMs, prices, promotionThreshold, type Prices } from './cost.js';
import { parseIdle } from './promoted.js';

export type Reason = 'dr' | 'demand' | 'never';

export interface Rule {
  repos: string[];
  reason: Reason;
  regions?: string[] | undefined;
}

export interface PromotePolicy {
  policy: 'demand' | 'always' | 'never';
  reads: number;
  windowMs: number;
  /** Promoted copies idle longer than this are evicted (src/placement/evict.ts); Infinity = kept forever. */
  evictAfterIdleMs: number;
}

/** `*` matches within one path component, `**` any number of components; everything else is literal. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
      if (glob[i + 1] === '/') i++;
    } else if (c === '*') re += '[^/]*';
    else re += c.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export class Rules {
  private readonly compiled: Array<{ rule: Rule; res: RegExp[] }>;
  readonly promote: PromotePolicy;

  /**
   * Without an explicit `reads`, the threshold comes from the price table, the window and the eviction horizon (see
   * promotionThreshold); without an explicit `evictAfterIdleMs`, the horizon is the price table's break-even
   * residency (breakEvenResidencyMs: ≈ 26 days at AWS list prices).
   */
  constructor(rules: readonly Rule[], promote: Partial<PromotePolicy> = {}, priceTable: Prices = DEFAULT_PRICES) {
    this.compiled = rules.map((rule) => ({ rule, res: rule.repos.map(globToRegExp) }));
    const windowMs = promote.windowMs ?? 3600_000;
    const evictAfterIdleMs = promote.evictAfterIdleMs ?? breakEvenResidencyMs(priceTable);
    const reads = promote.reads ?? promotionThreshold(priceTable, windowMs, evictAfterIdleMs);
    this.promote = { policy: promote.policy ?? (Number.isFinite(reads) ? 'demand' : 'never'), reads, windowMs, evictAfterIdleMs };
  }

  static fromConfig(config: Config): Rules {
    const p = config.placement;
    const idle = p?.promote?.evictAfterIdle;
    return new Rules(
      p?.rules ?? [],
      {
        ...(p?.promote?.policy ? { policy: p.promote.policy } : {}),
        ...(p?.promote?.reads ? { reads: p.promote.reads } : {}),
        ...(p?.promote?.windowSeconds ? { windowMs: p.promote.windowSeconds * 1000 } : {}),
        ...(idle !== undefined ? { evictAfterIdleMs: parseIdle(idle, 'placement.promote.evictAfterIdle') } : {}),
      },
      prices(config),
    );
  }

  ruleFor(repo: string): Rule {
    for (const { rule, res } of this.compiled) if (res.some((r) => r.test(repo))) return rule;
    return { repos: ['**'], reason: 'demand' };
  }

  /** Regions a `dr` rule wants `repo` copied to (excluding where it already lives is the replicator's job). */
  drTargets(repo: string, allRegions: readonly string[]): string[] {
    const rule = this.ruleFor(repo);
    if (rule.reason !== 'dr') return [];
    return rule.regions && rule.regions.length ? [...rule.regions] : [...allRegions];
  }

  /** Should a remote read of `repo`'s blob, seen `recentReads` times in the window, be promoted into the home region? */
  shouldPromote(repo: string | undefined, recentReads: number): boolean {
    const reason = repo ? this.ruleFor(repo).reason : 'demand';
    if (reason === 'never' || this.promote.policy === 'never') return false;
    if (this.promote.policy === 'always') return true;
    return recentReads >= this.promote.reads;
  }
}
