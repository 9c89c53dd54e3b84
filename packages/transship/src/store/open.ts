// Turns a store location (from a reference or the config) into a BlobStore, filling S3 endpoint and credentials
// from the config (file < environment < flags). The one place that knows which backend a string means.
import { resolve } from 'node:path';
import { TransshipError } from '@transship/core/errors';
import type { Config } from '../config.js';
import { DEFAULT_STORE } from '../config.js';
import type { BlobStore } from './contract.js';
import { FsStore } from './fs-store.js';
import { S3Store } from './s3-store.js';

export type Location = { kind: 'dir'; path: string } | { kind: 's3'; bucket: string; prefix: string };

/** `dir:PATH` or `s3://BUCKET[/PREFIX]` (no repository part): what `ls`, `verify` and `serve` take. */
export function parseStoreLocation(input: string): Location {
  if (input.startsWith('dir:')) {
    const path = input.slice(4);
    if (!path) throw new TransshipError('TS_INVALID_REFERENCE', `invalid store "${input}": expected dir:PATH`);
    return { kind: 'dir', path: resolve(path) };
  }
  if (input.startsWith('s3://')) {
    const rest = input.slice(5).replace(/\/+$/, '');
    const slash = rest.indexOf('/');
    const bucket = slash === -1 ? rest : rest.slice(0, slash);
    const prefix = slash === -1 ? '' : rest.slice(slash + 1);
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
      throw new TransshipError('TS_INVALID_REFERENCE', `invalid store "${input}": "${bucket}" is not a valid bucket name (3-63 lowercase letters, digits, "." and "-")`);
    }
    return { kind: 's3', bucket, prefix };
  }
  throw new TransshipError('TS_INVALID_REFERENCE', `invalid store "${input}": expected dir:PATH or s3://BUCKET[/PREFIX]`);
}

export interface OpenStoreOptions {
  config: Config;
  /** Region name to tag the store with; defaults to the config's home region or "default". */
  region?: string | undefined;
}

export function openStore(location: Location, opts: OpenStoreOptions): BlobStore {
  const region = opts.region ?? opts.config.region ?? 'default';
  const regionS3 = opts.region ? opts.config.regions?.[opts.region]?.s3 : undefined;
  if (location.kind === 'dir') return new FsStore(location.path, region);
  const s3 = { ...opts.config.s3, ...regionS3 };
  return new S3Store({
    bucket: location.bucket,
    prefix: location.prefix,
    endpoint: s3.endpoint,
    s3Region: s3.region,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    sessionToken: s3.sessionToken,
    region,
    multipartThreshold: s3.multipartThreshold,
    partSize: s3.partSize,
    partConcurrency: s3.partConcurrency,
    retry: opts.config.retry,
  });
}

/** The configured store of a region (or the home store): `store:` and `store@REGION:` references, `serve`. */
export function openConfiguredStore(config: Config, region?: string): BlobStore {
  if (region) {
    const r = config.regions?.[region];
    if (!r) throw new TransshipError('TS_CONFIG_INVALID', `unknown region "${region}"; configured regions: ${Object.keys(config.regions ?? {}).join(', ') || '(none)'}`);
    return openStore(parseStoreLocation(r.store), { config, region });
  }
  const home = config.region && config.regions?.[config.region] ? config.regions[config.region]?.store : undefined;
  return openStore(parseStoreLocation(config.store ?? home ?? DEFAULT_STORE), { config, region: config.region });
}
