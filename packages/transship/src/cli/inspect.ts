// `transship inspect REF`: what an image is (digest, media type, platforms, layers, sizes) without copying it.
import type { Command } from 'commander';
import { parseReference } from '../transfer/reference.js';
import { resolveSource } from './endpoints.js';
import { plan } from '../transfer/copy.js';
import { parseManifest } from '../transfer/manifest.js';
import { formatBytes } from './progress.js';
import { printJson } from './output.js';
import { runCommand, loadCliConfig, type GlobalOptions } from './context.js';
import { parseBool, registryAccess } from './args.js';

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('show an image: digest, media type, platforms, layers')
    .argument('<ref>', 'any copy reference, e.g. oci:./layout:latest or s3://bucket/app:1')
    .option('--json', 'print JSON')
    .option('--raw', 'print the root manifest bytes as stored')
    .option('--creds <user:password>', 'docker:// credentials (default: the auth files and credential helpers, as skopeo)')
    .option('--tls-verify [bool]', 'false: plain HTTP to a docker:// registry (loopback registries always do)', parseBool('--tls-verify'))
    .action(async (ref: string, flags: GlobalOptions & { raw?: boolean; creds?: string; tlsVerify?: boolean }, cmd: Command) =>
      runCommand(cmd, flags, async ({ signal }) => {
        const config = loadCliConfig(flags);
        const source = await resolveSource(parseReference(ref), config, signal, registryAccess(flags.creds, flags.tlsVerify, '--creds'));
        try {
          const p = await plan(source, signal);
          if (flags.raw) {
            process.stdout.write(p.root.bytes);
            return;
          }
          const root = parseManifest(p.root.bytes, p.root.descriptor.mediaType);
          const manifests = p.manifests.map((m) => ({ digest: m.descriptor.digest, mediaType: m.descriptor.mediaType, platform: m.descriptor.platform }));
          const totalSize = p.blobs.reduce((a, b) => a + b.size, 0);
          const result = {
            reference: source.description,
            digest: p.root.descriptor.digest,
            mediaType: p.root.descriptor.mediaType,
            kind: root.kind,
            manifests,
            blobs: p.blobs.map((b) => ({ digest: b.digest, mediaType: b.mediaType, size: b.size })),
            totalSize,
          };
          if (flags.json) printJson(result);
          else {
            process.stdout.write(`${result.reference}\n  digest     ${result.digest}\n  mediaType  ${result.mediaType}\n  size       ${formatBytes(totalSize)} in ${p.blobs.length} blobs\n`);
            for (const m of manifests) process.stdout.write(`  platform   ${JSON.stringify(m.platform ?? {})} ${m.digest}\n`);
            for (const b of result.blobs) process.stdout.write(`  blob       ${b.digest} ${formatBytes(b.size)} ${b.mediaType}\n`);
          }
        } finally {
          await source.close();
        }
      }),
    );
}
