// The findings table of docs/doctor.md, rendered from the two tables it documents: FINDING_CODES (findings.ts) and
// the repair rows (repair.ts). The file holds the rendering between two markers; a unit test fails when they differ
// (or the file is missing), and running this file rewrites it:
//   node --conditions=development --import tsx packages/containerd/src/doctor-docs.ts docs/doctor.md
import { readFileSync, writeFileSync } from 'node:fs';
import { FINDING_CODES, type FindingCode } from './findings.js';
import { ACTIONS } from './repair.js';

export const BEGIN = '<!-- findings table: generated from packages/containerd/src/findings.ts and repair.ts by packages/containerd/src/doctor-docs.ts -->';
export const END = '<!-- end of findings table -->';

function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

export function renderFindingsTable(): string {
  const lines = ['| code | severity | meaning | `--fix` action | what it does | precondition re-checked right before acting |', '|---|---|---|---|---|---|'];
  for (const code of Object.keys(FINDING_CODES) as FindingCode[]) {
    const spec = FINDING_CODES[code];
    const row = ACTIONS.find((r) => r.finding === code);
    lines.push(`| \`${code}\` | ${spec.severity} | ${cell(spec.meaning)} | ${row ? `\`${row.kind}\`` : 'manual'} | ${row ? cell(row.description) : '—'} | ${row ? cell(row.precondition) : '—'} |`);
  }
  return lines.join('\n');
}

/** The document with its generated section replaced (markers kept); throws when the markers are missing. */
export function withFindingsTable(doc: string): string {
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  if (a === -1 || b < a) throw new Error(`docs/doctor.md lacks the markers ${BEGIN} … ${END}`);
  return `${doc.slice(0, a + BEGIN.length)}\n${renderFindingsTable()}\n${doc.slice(b)}`;
}

if (process.argv[1] !== undefined && import.meta.url === `file://${process.argv[1]}` && process.argv[2]) {
  const file = process.argv[2];
  writeFileSync(file, withFindingsTable(readFileSync(file, 'utf8')));
}
