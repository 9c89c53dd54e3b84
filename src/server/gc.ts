// V8's full garbage collection as a function, for the two places `serve` needs one on purpose (malloc.ts at start,
// idle-gc.ts after bursts). Node only exposes `gc` with --expose-gc at start; a context created after the flag is
// set gets it too, so no restart or launcher flag is needed.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let cached: (() => void) | null | undefined;

/** A function running a full, synchronous garbage collection; undefined if V8 will not hand one out. */
export function fullGc(): (() => void) | undefined {
  if (cached === undefined) {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    cached = typeof gc === 'function' ? (gc as () => void) : null;
  }
  return cached ?? undefined;
}
