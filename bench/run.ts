// `npm run bench [-- --only transfer|registry|uploads|placement|gc|mirror]`: starts a fresh RGW and the counting proxy, runs the benchmark
// groups against their peers in this one run, writes bench/RESULTS.md, and stops everything it started.
// Benchmarks are not tests: nothing here fails on a missed target; RESULTS.md says which targets were met.
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startContext, REPO_ROOT } from './context.js';
import { distributionVersion, ensureDistributionInstalled } from '../test/support/distribution.js';
import { ensureSkopeo } from '../test/support/images.js';
import { haveGnuTime, toolVersion } from './measure.js';
import { renderSection, writeResults, type Section } from './report.js';
import { runTransfer } from './transfer.js';
import { runRegistry } from './registry.js';
import { runPlacement } from './placement.js';
import { runGc } from './gc.js';
import { runMirror } from './mirror.js';
import { runUploads } from './uploads.js';

const GROUPS = { transfer: runTransfer, registry: runRegistry, uploads: runUploads, placement: runPlacement, gc: runGc, mirror: runMirror } as const;
type Group = keyof typeof GROUPS;

const { values } = parseArgs({ options: { only: { type: 'string' }, out: { type: 'string' }, rounds: { type: 'string' } } });
if (values.only !== undefined && !(values.only in GROUPS)) {
  console.error(`--only takes one of: ${Object.keys(GROUPS).join(', ')} (got "${values.only}")`);
  process.exit(2);
}
const rounds = Number(values.rounds ?? 3);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 9) {
  console.error(`--rounds takes an integer 1..9 (got "${values.rounds}")`);
  process.exit(2);
}
const groups: Group[] = values.only ? [values.only as Group] : (Object.keys(GROUPS) as Group[]);
const out = values.out ?? join(REPO_ROOT, 'bench', 'RESULTS.md');

const t0 = Date.now();
const log = (line: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${line}`);
const abort = new AbortController();
const onSignal = (sig: NodeJS.Signals) => {
  log(`${sig}: stopping`);
  abort.abort(new Error(`interrupted by ${sig}`));
};
process.once('SIGINT', onSignal);
process.once('SIGTERM', onSignal);

if (!ensureSkopeo()) throw new Error('skopeo is missing and could not be installed (apt-get install skopeo)');
ensureDistributionInstalled(log);
haveGnuTime();
const versions = {
  node: process.version,
  skopeo: toolVersion('skopeo', ['--version'], /version\s+(\S+)/),
  'docker-registry': distributionVersion() ?? 'not installed',
  ceph: toolVersion('ceph', ['--version'], /ceph version\s+(\S+)/),
};
log(`versions: ${JSON.stringify(versions)}`);

const ctx = await startContext({ signal: abort.signal, log, rounds });
const sections: Section[] = [];
let failed = false;
let osdPeakRss: number | undefined;
try {
  for (const g of groups) {
    log(`=== ${g} ===`);
    const started = Date.now();
    const loadBefore = loadavg()[0] ?? 0;
    try {
      const section = await GROUPS[g](ctx);
      section.conditions = `load average ${loadBefore.toFixed(1)} before, ${(loadavg()[0] ?? 0).toFixed(1)} after (1 min, ${availableParallelism()} CPUs; anything above that means other work competed for the CPUs)`;
      sections.push(section);
    } catch (err) {
      if (abort.signal.aborted) throw err;
      failed = true;
      const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
      log(`${g} failed: ${message}`);
      sections.push({
        id: g,
        title: { transfer: 'Transfer core (issue 2)', registry: 'Registry (issue 3)', uploads: 'Shared upload sessions (issue 17)', placement: 'Placement across regions (issue 4)', gc: 'Garbage collection (issue 15)', mirror: 'Mirror (issue 18)' }[g],
        intro: [],
        rows: [],
        details: [],
        date: new Date().toISOString(),
        skipped: `the group failed: ${(err instanceof Error ? err.message : String(err)).split('\n').slice(0, 12).join(' / ')}`,
      });
    }
    log(`${g} took ${((Date.now() - started) / 1000).toFixed(0)} s`);
  }
} finally {
  osdPeakRss = ctx.osdPeakRss();
  await ctx.stop();
}
await writeResults(out, { date: new Date().toISOString(), versions, elapsedMs: Date.now() - t0, osdPeakRss }, sections);
for (const s of sections) console.log(`\n${renderSection(s)}`);
log(`wrote ${out}`);
process.exit(failed ? 1 : 0);
