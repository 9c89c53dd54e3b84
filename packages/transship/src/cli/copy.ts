// `transship copy SRC DST`: any supported transport to any other, deduplicated against the destination.
import type { Command } from 'commander';
import { copyImage } from '../transfer/copy.js';
import { parseReference } from '../transfer/reference.js';
import { resolveDestination, resolveSource } from './endpoints.js';
import { PresenceCache } from '../index/presence-cache.js';
import { DEFAULT_CACHE_FILE } from '../config/config.js';
import { ProgressBar, formatBytes } from './progress.js';
import { printJson, writeMetricsFile } from './output.js';
import { runCommand, type GlobalOptions, loadCliConfig } from './context.js';
import { parseBool, registryAccess } from './args.js';

interface CopyFlags extends GlobalOptions {
  json?: boolean;
  progress?: boolean;
  metricsFile?: string;
  concurrency?: string;
  cache?: boolean;
  srcCreds?: string;
  destCreds?: string;
  srcTlsVerify?: boolean;
  destTlsVerify?: boolean;
}

export function registerCopy(program: Command): void {
  program
    .command('copy')
    .description('copy an image between transports (oci:, oci-archive:, docker-archive:, docker://, dir:, s3://, store:), uploading only what is missing')
    .argument('<source>', 'e.g. oci:./layout:latest, docker://localhost:5000/app:1, s3://bucket/prefix/app:1')
    .argument('<destination>', 'e.g. dir:./store/app:1, s3://bucket/prefix/app:1, oci:./out:1')
    .option('--json', 'print a JSON summary on stdout')
    .option('--no-progress', 'no progress bar')
    .option('--metrics-file <file>', 'write metrics in node_exporter textfile format when done')
    .option('--concurrency <n>', 'blobs transferred in parallel')
    .option('--no-cache', 'do not use the local presence cache')
    .option('--src-creds <user:password>', 'docker:// source credentials (default: REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json, ~/.docker/config.json and its credential helpers)')
    .option('--dest-creds <user:password>', 'docker:// destination credentials (default: as --src-creds)')
    .option('--src-tls-verify [bool]', 'false: speak plain HTTP to the docker:// source (loopback registries always do)', parseBool('--src-tls-verify'))
    .option('--dest-tls-verify [bool]', 'false: speak plain HTTP to the docker:// destination (loopback registries always do)', parseBool('--dest-tls-verify'))
    .action(async (src: string, dst: string, flags: CopyFlags, cmd: Command) =>
      runCommand(cmd, flags, async ({ signal }) => {
        const config = loadCliConfig(flags, { ...(flags.concurrency ? { concurrency: Number(flags.concurrency) } : {}) });
        const srcRef = parseReference(src);
        const dstRef = parseReference(dst);
        const cacheEnabled = flags.cache !== false && config.cache?.enabled !== false;
        const cache = cacheEnabled ? new PresenceCache({ file: config.cache?.file ?? DEFAULT_CACHE_FILE, ...(config.cache?.ttlSeconds ? { ttlMs: config.cache.ttlSeconds * 1000 } : {}) }) : undefined;
        const started = Date.now();
        const source = await resolveSource(srcRef, config, signal, registryAccess(flags.srcCreds, flags.srcTlsVerify, '--src-creds'));
        const { dest, store } = await resolveDestination(dstRef, config, cache, signal, registryAccess(flags.destCreds, flags.destTlsVerify, '--dest-creds'), srcRef).catch(async (err: unknown) => {
          await source.close();
          throw err;
        });
        const bar = ProgressBar.enabled(flags) ? new ProgressBar() : undefined;
        try {
          const summary = await copyImage(source, dest, { signal, concurrency: config.concurrency ?? 4, onEvent: bar?.onEvent });
          bar?.finish();
          // S3 requests for a store, HTTP requests (by method) for a docker:// registry.
          const requests = store?.requestCounts() ?? dest.requestCounts?.() ?? {};
          const result = {
            ...summary,
            requests: { total: Object.values(requests).reduce((a, b) => a + b, 0), byOperation: requests },
            retries: (store as { retries?: number } | undefined)?.retries ?? 0,
            elapsedMs: Date.now() - started,
          };
          if (flags.json) printJson(result);
          else {
            const skipped = Object.entries(summary.blobs.skipped).map(([k, v]) => `${v} ${k}`).join(', ') || 'none';
            process.stdout.write(
              `copied ${summary.source} → ${summary.destination}\n` +
                `  digest   ${summary.digest}\n` +
                `  blobs    ${summary.blobs.total} total, ${summary.blobs.uploaded} uploaded, skipped: ${skipped}\n` +
                `  bytes    ${formatBytes(summary.bytes.uploaded)} uploaded, ${formatBytes(summary.bytes.skipped)} skipped\n` +
                (Object.keys(requests).length ? `  requests ${result.requests.total} (${Object.entries(requests).map(([k, v]) => `${k} ${v}`).join(', ')})\n` : '') +
                `  elapsed  ${(result.elapsedMs / 1000).toFixed(2)} s\n`,
            );
          }
        } finally {
          bar?.finish();
          await source.close();
          await dest.close();
          await store?.close();
          if (flags.metricsFile) await writeMetricsFile(flags.metricsFile);
        }
      }),
    );
}
