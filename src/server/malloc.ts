// Why this exists: every HTTP body chunk Node receives is copied into a fresh 64 KiB allocation (llhttp's on_body),
// which glibc's malloc serves from its heap. With glibc's default trim threshold (128 KiB) the heap top is given
// back to the kernel as soon as two such chunks are free, and the next chunks fault their pages in again. When S3
// answers in bursts — measured behind a relay, as with HAProxy or nginx in front of RGW — a `serve` that pulls a
// 30 MiB image from S3 took ~10,700 page faults and 300-470 ms of CPU; with the trim threshold raised, 37 faults
// and 90-150 ms (straight to RGW on loopback: 36 faults either way).
//
// glibc reads MALLOC_TRIM_THRESHOLD_ only at process start, but it also raises its thresholds by itself: freeing a
// chunk that came from mmap (anything over 128 KiB, up to 32 MiB) sets the mmap threshold to that chunk's size and
// the trim threshold to twice it (mallopt(3), "dynamic mmap threshold"). So one 31 MiB buffer allocated and freed at
// start-up gives the server a 62 MiB trim threshold (an 8 MiB one, from a 4 MiB block, still faulted 5-15k times
// per pull). The cost: allocations below 31 MiB, S3's 8 MiB part buffers included, now come from the heap, where
// fragmentation can keep a burst's memory. glibc makes that same move by itself the first time a part buffer is
// freed, though: after 8 parallel 64 MiB pushes RSS stayed at 462 MB with glibc's defaults and at 454 MB with this,
// 20 s later both unchanged. This only moves it before the first pull instead of after the first push.
// Freeing the block needs a garbage collection, which needs `gc`; V8 hands that to a new context once --expose-gc
// is set. Operators who set glibc's malloc tunables keep theirs (MALLOC_TRIM_THRESHOLD_ alone is the cleaner
// setting where the environment can be chosen: it leaves the mmap threshold alone), and on other C libraries this
// does nothing.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const BUFFER_BYTES = 31 * 1024 * 1024;

/**
 * Allocates the block and writes a byte of it. In a function of its own, so nothing refers to the block once this
 * returns: a temporary in the caller's frame (the interpreter keeps call arguments in its registers) would keep it
 * alive through the collection below.
 */
function allocateBlock(): void {
  const block = Buffer.allocUnsafeSlow(BUFFER_BYTES);
  block[0] = 0;
}

/** Node's diagnostic report says which C library it runs on (asked without network details: no DNS lookups). */
function runsOnGlibc(): boolean {
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

/** Raises glibc's malloc trim threshold for this process (see above). Returns whether it did anything. */
export function raiseMallocTrimThreshold(env: NodeJS.ProcessEnv = process.env): boolean {
  if (process.platform !== 'linux' || mallocTunedByOperator(env)) return false;
  if (!runsOnGlibc()) return false; // musl and others: no dynamic threshold to lean on
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (() => void) | undefined;
  if (typeof gc !== 'function') return false;
  allocateBlock();
  gc();
  return true;
}
