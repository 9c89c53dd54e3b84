// Durations as people type them in flags and config: a number with a unit — `1500ms`, `90s`, `15m`, `2h`, `7d` —
// or a plain number of seconds (`30`). One grammar for every flag (doctor, watch) and config key (watch.*,
// placement.promote.evictAfterIdle), so a value that works in one place works in all of them.
import { TransshipError, type ErrorCode } from './errors.js';

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
type Unit = keyof typeof UNIT_MS;

export const DURATION_FORMS = 'a number with a unit (ms, s, m, h, d) like 1500ms, 90s, 15m, 2h or 7d, or plain seconds';

/** Why `value` is not a duration, or undefined when it is one (config validation reports the reason). */
export function durationProblem(value: string): string | undefined {
  return check(value).problem;
}

function check(value: string): { ms: number; problem?: undefined } | { ms?: undefined; problem: string } {
  const s = typeof value === 'string' ? value.trim() : '';
  if (s === '') return { problem: 'the duration is empty' };
  const m = /^([+-]?)(\d+(?:\.\d+)?)([a-zA-Z]*)$/.exec(s);
  if (!m) return { problem: `"${clip(value)}" is not a number followed by a unit` };
  if (m[1] === '-') return { problem: `"${clip(value)}" is negative` };
  const unit = m[3] === '' ? 's' : m[3];
  if (!Object.hasOwn(UNIT_MS, unit!)) return { problem: `unknown unit "${clip(m[3]!)}" in "${clip(value)}"` };
  const ms = Math.round(Number(m[2]) * UNIT_MS[unit as Unit]);
  if (!Number.isSafeInteger(ms)) return { problem: `"${clip(value)}" is too long` };
  return { ms };
}

function clip(s: string): string {
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

/**
 * Milliseconds of a duration; `where` names the flag or config key in the error, which has `code` (TS_USAGE for
 * flags, TS_CONFIG_INVALID for configuration).
 */
export function parseDuration(value: string, where: string, code: Extract<ErrorCode, 'TS_USAGE' | 'TS_CONFIG_INVALID'> = 'TS_USAGE'): number {
  const r = check(value);
  if (r.problem !== undefined) throw new TransshipError(code, `${where}: ${r.problem}; expected ${DURATION_FORMS}`, { details: { [where]: clip(String(value)) } });
  return r.ms;
}
