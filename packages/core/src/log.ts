// Structured logs (pino, JSON lines on stderr so stdout stays for results and --json). Upload log lines carry
// digest, attempt, store and an error summary (code + first line) — see `uploadLog`.
import { pino, type Logger } from 'pino';
import { errorSummary } from './errors.js';

const level = process.env.TRANSSHIP_LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'warn';

export let log: Logger = pino({ level, base: { app: 'transship' } }, pino.destination({ fd: 2, sync: true }));

/** Replaces the root logger (CLI --log-level, tests capturing lines). */
export function setLogger(logger: Logger): void {
  log = logger;
}

export function setLogLevel(newLevel: string): void {
  log.level = newLevel;
}

export function uploadLog(fields: { digest: string; attempt: number; store: string; err?: unknown }): Record<string, unknown> {
  return { digest: fields.digest, attempt: fields.attempt, store: fields.store, ...(fields.err === undefined ? {} : { error: errorSummary(fields.err) }) };
}
