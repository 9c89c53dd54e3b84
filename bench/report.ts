// bench/RESULTS.md: a header (date, machine, versions, method), then one section per benchmark group. Each section
// sits between markers, so `--only GROUP` replaces its own section and keeps the others from the last full run.
import { readFile, writeFile } from 'node:fs/promises';
import { cpus, freemem, release, totalmem } from 'node:os';
import { availableParallelism } from 'node:os';

export interface Row {
  scenario: string;
  transship: string;
  peer: string;
  /** transship ÷ peer (or peer ÷ transship for "higher is better" rows — say which in `target`). */
  ratio: string;
  target: string;
  /** undefined: informational row, no target. */
  met: boolean | undefined;
}

export interface Section {
  id: 'transfer' | 'registry' | 'placement' | 'gc' | 'mirror' | 'uploads';
  title: string;
  /** Short paragraph(s) under the title: what is compared and how. */
  intro: string[];
  rows: Row[];
  /** Raw numbers, per-operation counts, observations (markdown lines). */
  details: string[];
  /** Set when the group could not run (e.g. `transship serve` is not in the tree yet). */
  skipped?: string;
  date: string;
  /** Machine conditions while the group ran (load average), filled in by run.ts. */
  conditions?: string;
}

export interface RunInfo {
  date: string;
  versions: Record<string, string>;
  elapsedMs: number;
  /** Peak RSS of RGW's memstore OSD over the run, bytes. */
  osdPeakRss?: number | undefined;
}

const gib = (n: number) => `${(n / 1024 ** 3).toFixed(1)} GiB`;

export function machineLine(): string {
  const model = cpus()[0]?.model ?? 'unknown CPU';
  return `${availableParallelism()} CPUs (${model}), ${gib(totalmem())} RAM (${gib(freemem())} free at start), Linux ${release()}`;
}

export function renderSection(s: Section): string {
  const out: string[] = [`<!-- section:${s.id} -->`, `## ${s.title}`, '', `_Measured ${s.date}${s.conditions ? `; ${s.conditions}` : ''}._`, ''];
  if (s.skipped) {
    out.push(`**Not run:** ${s.skipped}`, '');
  } else {
    out.push(...s.intro, '');
    const met = s.rows.filter((r) => r.met === true).length;
    const judged = s.rows.filter((r) => r.met !== undefined).length;
    out.push(`**${met} of ${judged} targets met.**`, '');
    out.push('| scenario | transship | peer | ratio | target | met? |', '| --- | --- | --- | --- | --- | --- |');
    for (const r of s.rows) {
      const mark = r.met === undefined ? '—' : r.met ? '✅ yes' : '❌ **no**';
      out.push(`| ${[r.scenario, r.transship, r.peer, r.ratio, r.target, mark].map(cell).join(' | ')} |`);
    }
    out.push('');
    if (s.details.length) out.push('<details><summary>Raw numbers and observations</summary>', '', ...s.details, '', '</details>', '');
  }
  out.push(`<!-- /section:${s.id} -->`);
  return out.join('\n');
}

function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

export function renderHeader(info: RunInfo, sectionIds: string[]): string {
  const v = info.versions;
  return [
    '# transship benchmarks',
    '',
    `Written by \`npm run bench\` (bench/run.ts). Last run: ${info.date} (${sectionIds.join(', ')}; ${(info.elapsedMs / 1000).toFixed(0)} s in total).`,
    '',
    `- **Machine:** ${machineLine()}`,
    `- **Versions:** ${Object.entries(v).map(([k, x]) => `${k} ${x}`).join(', ')}`,
    '- **Method:** one fresh single-node Ceph RGW (memstore OSD) per run. Every S3 client of every contender — the',
    '  transship CLI and server, Distribution\'s s3 driver, the raw PutObject baseline — talks to RGW through the same',
    '  counting relay (test/support/s3-relay.py: heads parsed, bodies moved with splice(2), ~0.1-0.3 s of CPU per',
    '  256 MiB), so "S3 requests" are counted by one counter on the wire, per scenario, for whoever ran it. Peers',
    '  run in the same process tree, in the same run, on the same RGW.',
    '- **Reading the numbers:** this is a 2-core machine shared by RGW, the proxy and the contenders, so absolute',
    '  times move by ±20 % between runs; the ratios (measured back to back) and the request counts (deterministic)',
    '  are what the targets are judged on. Sizes are MiB (2^20 bytes); MB/s is 10^6 bytes per second.',
    '- **RGW memory:** memstore keeps objects in the OSD\'s RAM, so after each big-layer measurement the bench deletes',
    '  what it wrote and runs `radosgw-admin gc process --include-all`, which frees it at once: a full run uploads ~4 GiB',
    '  in total, but RGW never holds much more than the biggest scenario (the 1 GiB layer) at a time. Peak RSS of the',
    `  OSD this run: ${info.osdPeakRss ? gib(info.osdPeakRss) : 'n/a'}.`,
    '',
  ].join('\n');
}

/** Writes RESULTS.md: fresh sections replace their old versions; sections not run this time are kept. */
export async function writeResults(file: string, info: RunInfo, sections: Section[]): Promise<void> {
  const previous = await readFile(file, 'utf8').catch(() => '');
  const order: Array<Section['id']> = ['transfer', 'registry', 'uploads', 'placement', 'gc', 'mirror'];
  const blocks: string[] = [];
  for (const id of order) {
    const fresh = sections.find((s) => s.id === id);
    if (fresh) blocks.push(renderSection(fresh));
    else {
      const old = new RegExp(`<!-- section:${id} -->[\\s\\S]*?<!-- /section:${id} -->`).exec(previous)?.[0];
      if (old) blocks.push(old);
    }
  }
  // Sections written by standalone benchmarks (bench/watch.ts) are not in `order`: keep them as they are.
  for (const m of previous.matchAll(/<!-- section:([a-z-]+) -->[\s\S]*?<!-- \/section:\1 -->/g)) if (!(order as string[]).includes(m[1] ?? '')) blocks.push(m[0]);
  await writeFile(file, `${renderHeader(info, sections.map((s) => s.id))}\n${blocks.join('\n\n')}\n`);
}

/** Replaces (or appends) one marked section of RESULTS.md, leaving every other byte of the file alone. */
export async function replaceSection(file: string, id: string, block: string): Promise<void> {
  const previous = await readFile(file, 'utf8').catch(() => '');
  const re = new RegExp(`<!-- section:${id} -->[\\s\\S]*?<!-- /section:${id} -->`);
  const next = re.test(previous) ? previous.replace(re, () => block) : `${previous.replace(/\n*$/, '\n\n')}${block}\n`;
  await writeFile(file, next);
}

// ---- formatting helpers shared by the groups ----

export const fmt = {
  ms: (ms: number) => (ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`),
  mb: (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`,
  mib: (bytes: number) => `${(bytes / 1024 ** 2).toFixed(0)} MiB`,
  rate: (bytes: number, ms: number) => `${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s`,
  ratio: (x: number) => (Number.isFinite(x) ? `${x >= 10 ? x.toFixed(1) : x.toFixed(2)}×` : 'n/a'),
  /** `GetObject 3, PutObject 5` */
  ops: (byOperation: Record<string, number>) =>
    Object.entries(byOperation)
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') || 'none',
};
