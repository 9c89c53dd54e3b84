// How commands report: results on stdout (a table for people, one JSON document with --json), errors on stderr with
// their stable code, and an exit code scripts can trust (see ExitCode in core/errors.ts).
import { writeFileSync, renameSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { ERROR_CODES, ExitCode, TransshipError, errorSummary, isAbortError } from '@transship/core/errors';
import { processMetrics } from '@transship/core/metrics-registry';

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof TransshipError) return ERROR_CODES[err.code].exit;
  if (isAbortError(err)) return ExitCode.cancelled;
  if ((err as { code?: unknown })?.code === 'commander.invalidArgument') return ExitCode.usage;
  return ExitCode.failure;
}

/** Prints an error the way a person can act on it, or as JSON for scripts. */
export function reportError(err: unknown, json: boolean): number {
  const code = exitCodeFor(err);
  const s = errorSummary(err);
  if (json) printJson({ error: err instanceof TransshipError ? err.toJSON() : { code: s.code, message: s.message } });
  else process.stderr.write(`transship: error ${s.code}: ${err instanceof Error ? err.message : String(err)}\n`);
  if (!(err instanceof TransshipError) && !isAbortError(err) && process.env.TRANSSHIP_DEBUG) process.stderr.write(`${(err as Error)?.stack}\n`);
  return code;
}

/** node_exporter textfile collector format: written to a temp file and renamed, so the collector never reads half. */
export async function writeMetricsFile(file: string): Promise<void> {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, await processMetrics().metrics());
  renameSync(tmp, file);
}
