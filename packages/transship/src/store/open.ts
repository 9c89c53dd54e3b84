// Turns a store location (from a reference or the config) into a BlobStore, filling S3 endpoint and credentials
// from the config (file < environment < flags). The one place that knows which backend a string means.
import { resolve } from 'node:path';
import { TransshipError } from '@transship/core/errors';
import { parseStoreLocation as parseLocation, type DirLocation, type S3Location } from '@transship/core/reference';
import type { Config } from '../config/config.js';
import { DEFAULT_STORE } from '../config/config.js';
import type { BlobStore } from './contract.js';
import { FsStore } from './fs-store.js';
import { S3Store } from './s3-store.js';

export type Location = DirLocation | S3Location;

/** `dir:PATH` or `s3://BUCKET[/PREFIX]` (the grammar is core/reference.ts's); a directory path is made absolute. */
export function parseStoreLocation(input: string): Location {
  const loc = parseLocation(input);
  return loc.kind === 'dir' ? { kind: 'dir', path: resolve(loc.path) } : loc;
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
