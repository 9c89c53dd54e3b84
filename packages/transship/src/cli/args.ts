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

/** A boolean flag value as skopeo takes it (`--dest-tls-verify=false`); commander passes it here. */
export function parseBool(flag: string): (value: string | undefined) => boolean {
  return (value) => {
    if (value === undefined || /^(true|1|yes)$/i.test(value)) return true;
    if (/^(false|0|no)$/i.test(value)) return false;
    throw new TransshipError('TS_USAGE', `invalid ${flag} "${value}": expected true or false`);
  };
}

/** How to reach a docker:// registry: `--creds USER:PASS` and `--tls-verify=false` (plain HTTP) as skopeo has them. */
export interface RegistryAccess {
  credentials?: { username: string; password: string } | undefined;
  insecure?: boolean | undefined;
}

export function registryAccess(creds: string | undefined, tlsVerify: boolean | undefined, flag: string): RegistryAccess {
  let credentials: RegistryAccess['credentials'];
  if (creds !== undefined) {
    const i = creds.indexOf(':');
    if (i <= 0) throw new TransshipError('TS_USAGE', `${flag} expects USER:PASSWORD`, { details: { flag } });
    credentials = { username: creds.slice(0, i), password: creds.slice(i + 1) };
  }
  return { credentials, insecure: tlsVerify === false };
}
