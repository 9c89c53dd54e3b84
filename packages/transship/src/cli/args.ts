// Argument helpers more than one command uses: HOST:PORT, repeatable lists, a store argument (durations: core/duration.ts). One module
// so commands never import each other. It stays light on purpose — no store, AWS SDK or fastify at load time (the
// store argument loads them when called) — so a node agent like `watch` does not pay ~40 MB for `serve`'s imports.
import { TransshipError } from '@transship/core/errors';
import type { Config } from '../config/config.js';
import { parseStoreArgument } from '@transship/core/reference';
import type { BlobStore } from '../store/contract.js';

export function parseHostPort(value: string, flag = '--listen'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || host === undefined || !Number.isInteger(port) || port > 65535) {
    throw new TransshipError('TS_USAGE', `invalid ${flag} "${value}": expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080`);
  }
  return { host: host || '0.0.0.0', port };
}

/** A repeatable, comma-separated option (`--namespace a,b --namespace c`), for commander's option parser. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...value.split(',').map((s) => s.trim()).filter(Boolean)];
}

/**
 * The `[store]` argument of `ls` and `verify`: `dir:PATH`, `s3://BUCKET[/PREFIX]`, `store:` or `store@REGION:`
 * (default: the configured store). Loads the store modules only now (see the header).
 */
export async function openStoreArg(arg: string | undefined, config: Config): Promise<BlobStore> {
  const loc = arg === undefined ? undefined : parseStoreArgument(arg);
  const { openConfiguredStore, openStore, parseStoreLocation } = await import('../store/open.js');
  if (arg === undefined) return openConfiguredStore(config);
  if (loc?.kind === 'configured') return openConfiguredStore(config, loc.region);
  return openStore(parseStoreLocation(arg), { config });
}
