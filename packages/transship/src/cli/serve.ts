// `transship serve`: the OCI registry API over a store (the embedded directory store by default), until SIGINT or
// SIGTERM; then in-flight uploads are cancelled, spool files removed, connections closed, the store closed.
import type { Command } from 'commander';
import { isIP } from 'node:net';
import { statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_STORE, type Config } from '../config/config.js';
import { parseHostPort } from './args.js';
import { TransshipError } from '@transship/core/errors';
import { openStore, parseStoreLocation } from '../store/open.js';
import { metaStoreFor } from '../registry/meta.js';
import type { BlobCacheOptions } from '../registry/blob-cache.js';
import { Regions } from '../placement/regions.js';
import { Rules } from '../placement/rules.js';
import { PlacedReader } from '../placement/read-path.js';
import { Replicator } from '../placement/replicator.js';
import { ReplicationKicker } from '../placement/kicker.js';
import { replicateAfterPushes } from '../server/replicate-after-push.js';
import { startEviction } from '../placement/evict.js';
import { freshnessOptions, pullRecording, startGc } from '../gc/loop.js';
import { hashPassword } from '../registry/auth.js';
import { buildServer } from '../server/server.js';
import { Mirror } from '../mirror/mirror.js';
import { Upstreams } from '../mirror/upstreams.js';
import { tuneHeapForStreaming } from '../server/heap.js';
import { mallocHint } from '../server/malloc.js';
import { log } from '@transship/core/log';
import { collectWhenIdle } from '../server/idle-gc.js';
import { scavengeWhileBusy } from '../server/busy-scavenge.js';
import { runCommand, loadCliConfig, type GlobalOptions } from './context.js';

interface ServeFlags extends GlobalOptions {
  store?: string;
  listen?: string;
  tlsCert?: string;
  tlsKey?: string;
  allowDelete?: boolean;
  uploadDir?: string;
  maxBody?: string;
  redirect?: boolean;
  blobCacheMaxBytes?: string;
  hashPassword?: boolean;
}

export const DEFAULT_LISTEN = '127.0.0.1:5000';
/** Default bound of the local blob cache (serve.blobCache.maxBytes) in front of a remote store. */
export const DEFAULT_BLOB_CACHE_BYTES = 2 * 1024 ** 3;


function storeLocation(flag: string | undefined, config: Config): string {
  const home = config.region ? config.regions?.[config.region]?.store : undefined;
  return flag ?? config.store ?? home ?? DEFAULT_STORE;
}

/** statfs(2) f_type of tmpfs: files there live in RAM. */
const TMPFS_MAGIC = 0x01021994;

/**
 * The blob cache `serve` runs with. Explicit settings are taken as they are. The default lives next to the upload
 * spools (same filesystem, so uploads enter by hard link); under the OS temp dir its name carries the uid, so users
 * do not collide — and it stays off when that is tmpfs, where 2 GiB of "disk" cache would be 2 GiB of RAM.
 */
async function blobCacheFor(dir: string | undefined, maxBytes: number | undefined, uploadDir: string | undefined): Promise<BlobCacheOptions | undefined> {
  if (dir !== undefined) return { dir, maxBytes: maxBytes ?? DEFAULT_BLOB_CACHE_BYTES };
  const parent = uploadDir ?? tmpdir();
  const fsType = await statfs(parent).then((s) => s.type, () => undefined);
  if (fsType === TMPFS_MAGIC && maxBytes === undefined) {
    log.warn({ hint: 'blobCache' }, `blob cache off: ${parent} is tmpfs (memory); set serve.blobCache.dir to a directory on disk to turn it on`);
    return undefined;
  }
  return { dir: join(parent, uploadDir ? 'transship-blob-cache' : `transship-blob-cache-${process.getuid?.() ?? 0}`), maxBytes: maxBytes ?? DEFAULT_BLOB_CACHE_BYTES };
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host.startsWith('127.') || host === '::1';
}

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('serve the OCI distribution API (push/pull with skopeo, containerd, docker) over a store')
    .option('--store <store>', 'dir:PATH or s3://BUCKET[/PREFIX] (default: the configured store, else the embedded directory store)')
    .option('--listen <host:port>', `address to listen on (default: serve.listen, else ${DEFAULT_LISTEN})`)
    .option('--tls-cert <file>', 'PEM certificate: serve HTTPS (with --tls-key)')
    .option('--tls-key <file>', 'PEM private key for --tls-cert')
    .option('--allow-delete', 'allow DELETE of manifests, tags and blob links')
    .option('--upload-dir <dir>', 'where upload sessions are spooled (default: the OS temp dir)')
    .option('--max-body <bytes>', 'largest blob a client may upload (413 above)')
    .option('--blob-cache-max-bytes <bytes>', `S3 stores: bytes of blobs kept on local disk to answer GETs (default: serve.blobCache.maxBytes, else ${DEFAULT_BLOB_CACHE_BYTES}; 0 = off)`)
    .option('--redirect', 'S3 stores: answer blob GETs with a redirect to a presigned URL (clients must reach the S3 endpoint)')
    .option('--hash-password', 'read a password on stdin, print its bcrypt hash (as htpasswd -B) for serve.auth.users / htpasswd, exit')
    .action(async (flags: ServeFlags, cmd: Command) =>
      runCommand(cmd, flags, async ({ signal }) => {
        if (flags.hashPassword) {
          const chunks: Buffer[] = [];
          for await (const c of process.stdin as AsyncIterable<Buffer>) chunks.push(c);
          const password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
          if (!password) throw new TransshipError('TS_USAGE', '--hash-password: no password on stdin');
          process.stdout.write(`${hashPassword(password)}\n`);
          return;
        }
        const config = loadCliConfig(flags);
        const serve = config.serve ?? {};
        if (Boolean(flags.tlsCert) !== Boolean(flags.tlsKey)) throw new TransshipError('TS_USAGE', '--tls-cert and --tls-key go together');
        const maxBody = flags.maxBody === undefined ? serve.maxBodyBytes : Number(flags.maxBody);
        if (maxBody !== undefined && (!Number.isInteger(maxBody) || maxBody <= 0)) throw new TransshipError('TS_USAGE', `invalid --max-body "${flags.maxBody}": expected a positive number of bytes`);
        const listen = parseHostPort(flags.listen ?? serve.listen ?? DEFAULT_LISTEN);
        const tls = flags.tlsCert && flags.tlsKey ? { cert: flags.tlsCert, key: flags.tlsKey } : serve.tls;
        const location = parseStoreLocation(storeLocation(flags.store, config));
        const region = flags.store ? undefined : config.region;
        // With regions configured (and no explicit --store), writes go to the home region and reads that miss it are
        // lazy fetches from the others (src/placement).
        const regions = !flags.store && config.regions ? Regions.fromConfig(config) : undefined;
        const store = regions ? regions.homeStore : openStore(location, { config, region });
        const placed = regions ? new PlacedReader(regions, Rules.fromConfig(config)) : undefined;
        const redirect = flags.redirect || serve.redirect ? { expiresInSeconds: serve.redirect?.expiresInSeconds ?? 1200 } : undefined;
        if (redirect && !store.blobUrl) throw new TransshipError('TS_USAGE', `--redirect (serve.redirect) needs an S3 store; ${store.name} cannot hand out URLs`);
        const meta = metaStoreFor(store);
        const cacheBytes = flags.blobCacheMaxBytes === undefined ? serve.blobCache?.maxBytes : Number(flags.blobCacheMaxBytes);
        if (cacheBytes !== undefined && (!Number.isInteger(cacheBytes) || cacheBytes < 0)) throw new TransshipError('TS_USAGE', `invalid --blob-cache-max-bytes "${flags.blobCacheMaxBytes}": expected a number of bytes (0 = off)`);
        const uploadDir = flags.uploadDir ?? serve.uploadDir;
        // A directory store is local already: caching it on local disk would only copy it.
        const blobCache = store.stageBlob && cacheBytes !== 0
          ? await blobCacheFor(serve.blobCache?.dir, cacheBytes, uploadDir)
          : undefined;
        // `dr` rules are eager: a push is replicated right after it is answered, one bounded pass at a time; a kick
        // lost to a crash is picked up by the next push or `transship replicate` (the replicator is idempotent).
        const kicker = regions ? new ReplicationKicker(Replicator.fromConfig(config, regions)) : undefined;
        // Promoted copies are a cache: a bounded eviction pass every placement.evict.intervalSeconds (evict.ts).
        const eviction = placed ? startEviction(config, placed) : undefined;
        // Garbage collection: periodic passes, one per store at a time across instances (src/gc/loop.ts).
        const gc = startGc(config, store, uploadDir ?? tmpdir());
        // Pull-through mirroring of upstream registries (src/mirror): spools next to the upload sessions'.
        const mirror = config.mirror ? new Mirror(new Upstreams(config.mirror), { dir: uploadDir, maxBlobBytes: maxBody }) : undefined;
        tuneHeapForStreaming(); // see src/server/heap.ts: otherwise V8 marks almost continuously while bytes stream
        let app;
        try {
          app = await buildServer({
            store,
            meta,
            placed,
            tls,
            uploadDir,
            blobCache,
            maxBodyBytes: maxBody,
            maxManifestBytes: serve.maxManifestBytes,
            uploadIdleSeconds: serve.uploadIdleSeconds,
            maxUploadSessions: serve.maxUploadSessions,
            maxSpoolBytes: serve.maxSpoolBytes,
            requestTimeoutSeconds: serve.requestTimeoutSeconds,
            idleTimeoutSeconds: serve.idleTimeoutSeconds,
            streamUploadsAfterBytes: serve.streamUploadsAfterBytes,
            sharedUploads: serve.sharedUploads,
            redirect,
            allowDelete: flags.allowDelete ?? serve.allowDelete,
            blobLinks: serve.blobLinks,
            auth: serve.auth,
            freshness: freshnessOptions(config),
            mirror,
            pulls: pullRecording(config),
          });
          if (kicker) replicateAfterPushes(app, kicker);
          collectWhenIdle(app); // see src/server/idle-gc.ts: a burst's buffers would otherwise stay until the next request
          scavengeWhileBusy(app); // see src/server/busy-scavenge.ts: streamed bytes would otherwise start mark-compacts
          await app.listen({ host: listen.host, port: listen.port });
        } catch (err) {
          await app?.close();
          await kicker?.close();
          await eviction?.close();
          await gc?.close();
          await (regions ? regions.close() : store.close());
          throw err;
        }
        const addr = app.server.address();
        const port = typeof addr === 'object' && addr ? addr.port : listen.port;
        const shownHost = isIP(listen.host) === 6 ? `[${listen.host}]` : listen.host;
        process.stdout.write(`transship: registry listening on ${tls ? 'https' : 'http'}://${shownHost}:${port} (store ${store.name}${serve.auth ? ', auth on' : ''}${mirror ? `, mirroring ${mirror.upstreams.all.map((u) => u.registry).join(', ')}` : ''})\n`);
        const hint = mallocHint(); // see src/server/malloc.ts
        // Notes go through the structured log like everything else on stderr (one JSON object a line).
        if (hint) log.warn({ hint: 'malloc' }, hint);
        if (!serve.auth && !isLoopback(listen.host)) log.warn({ hint: 'auth' }, 'auth is off and the registry listens beyond loopback; configure serve.auth');
        await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
        // Closing the app cancels in-flight uploads and removes their spools (registry onClose), then the store.
        await app.close();
        // A replication pass in flight is cancelled; the next start (or `transship replicate`) finishes it.
        await kicker?.close();
        await eviction?.close();
        await gc?.close();
        await (regions ? regions.close() : store.close());
      }),
    );
}
