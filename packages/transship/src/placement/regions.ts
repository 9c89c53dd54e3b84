// The regions this instance knows: its home region (where every write goes — the region-local write buffer) and
// the others (read from lazily, written to only by the replicator when a rule says so).
import type { Config } from '../config/config.js';
import { TransshipError } from '@transship/core/errors';
import type { BlobStore } from '../store/contract.js';
import { openConfiguredStore } from '../store/open.js';

export class Regions {
  private constructor(
    readonly home: string,
    private readonly stores: Map<string, BlobStore>,
    /** Non-home regions, in the order lazy fetches try them. */
    readonly others: string[],
  ) {}

  /** With no `regions:` configured there is one region (the home store) and placement is a no-op. */
  static fromConfig(config: Config): Regions {
    if (!config.regions || Object.keys(config.regions).length === 0) {
      const store = openConfiguredStore(config);
      return new Regions(store.region, new Map([[store.region, store]]), []);
    }
    const home = config.region;
    if (!home) throw new TransshipError('TS_CONFIG_INVALID', 'regions are configured but the home region is not: set `region:` (or TRANSSHIP_REGION)');
    const stores = new Map<string, BlobStore>();
    for (const name of Object.keys(config.regions)) stores.set(name, openConfiguredStore(config, name));
    const order = config.placement?.fetchOrder ?? Object.keys(config.regions);
    const others = [...new Set([...order, ...Object.keys(config.regions)])].filter((r) => r !== home);
    return new Regions(home, stores, others);
  }

  /** For tests and embedding: regions from ready-made stores. */
  static of(home: string, stores: Record<string, BlobStore>, order?: string[]): Regions {
    if (!(home in stores)) throw new TransshipError('TS_CONFIG_INVALID', `home region "${home}" has no store`);
    const others = (order ?? Object.keys(stores)).filter((r) => r !== home && r in stores);
    return new Regions(home, new Map(Object.entries(stores)), others);
  }

  store(region: string): BlobStore {
    const s = this.stores.get(region);
    if (!s) throw new TransshipError('TS_CONFIG_INVALID', `unknown region "${region}"; configured regions: ${[...this.stores.keys()].join(', ')}`);
    return s;
  }

  get homeStore(): BlobStore {
    return this.store(this.home);
  }

  get names(): string[] {
    return [this.home, ...this.others];
  }

  async close(): Promise<void> {
    for (const s of this.stores.values()) await s.close();
  }
}
