// Why this exists: every HTTP body chunk Node receives is copied into a fresh 64 KiB allocation (llhttp's on_body),
// which glibc's malloc serves from its heap. With glibc's default trim threshold (128 KiB) the heap top goes back to
// the kernel as soon as a few such chunks are free, and the next chunks fault their pages in again. When S3 answers
// in bursts — measured behind a relay, as with HAProxy or nginx in front of RGW — a `serve` pulling a 30 MiB image
// from S3 took 160-4,100 page faults and 100-280 ms of CPU per pull from the second pull on; with the settings below
// 20-420 faults and 80-120 ms (straight to RGW on loopback: ~36 faults either way).
//
// The fix is two glibc settings, which glibc reads only at process start, so they live where `serve` is launched
// (deploy/systemd, deploy/kubernetes, the bench) and `serve` says so when they are missing:
// - MALLOC_TRIM_THRESHOLD_=64 MiB: keep up to 64 MiB of freed heap top mapped;
// - MALLOC_MMAP_THRESHOLD_=4 MiB: S3's 8 MiB part buffers still come from mmap and go back to the kernel when freed.
// Tried and dropped: raising the thresholds from inside the process (freeing one 31 MiB mmap'ed block moves glibc's
// dynamic thresholds). It cut the faults as well, but it cannot set the two apart: the mmap threshold went to 31 MiB
// with it, part buffers came from the heap, and after 8 parallel 64 MiB pushes plus a full collection RSS stayed at
// 311 MB, against 172 MB with the settings below and 149 MB with glibc's defaults.

/** The glibc malloc settings `serve` is meant to run with (environment variables, read by glibc at start). */
export const SERVE_MALLOC_ENV: Readonly<Record<string, string>> = {
  MALLOC_TRIM_THRESHOLD_: String(64 * 1024 * 1024),
  MALLOC_MMAP_THRESHOLD_: String(4 * 1024 * 1024),
};

/** Node's diagnostic report says which C library it runs on (asked without network details: no DNS lookups). */
export function runsOnGlibc(): boolean {
  // excludeNetwork is newer than @types/node 20's ProcessReport.
  const report = process.report as (NodeJS.ProcessReport & { excludeNetwork?: boolean }) | undefined;
  if (!report) return false;
  const excluded = report.excludeNetwork;
  report.excludeNetwork = true;
  try {
    return Boolean((report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime);
  } finally {
    report.excludeNetwork = excluded;
  }
}

/** True when the operator already chose glibc malloc settings (environment variables or GLIBC_TUNABLES). */
export function mallocTunedByOperator(env: NodeJS.ProcessEnv = process.env): boolean {
  return Object.keys(env).some((k) => k.startsWith('MALLOC_') && k.endsWith('_')) || /glibc\.malloc\./.test(env.GLIBC_TUNABLES ?? '');
}

/** A one-line hint for the start-up log when `serve` runs on glibc without malloc settings; otherwise undefined. */
export function mallocHint(env: NodeJS.ProcessEnv = process.env, glibc = process.platform === 'linux' && runsOnGlibc()): string | undefined {
  if (!glibc || mallocTunedByOperator(env)) return undefined;
  const vars = Object.entries(SERVE_MALLOC_ENV).map(([k, v]) => `${k}=${v}`).join(' ');
  return `glibc malloc runs with its defaults; pulls through a bursty S3 endpoint cost up to 3x the CPU. Start serve with ${vars} (deploy/ does; see src/server/malloc.ts)`;
}
