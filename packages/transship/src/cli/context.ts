// What every command shares: global flags (--config, --log-level), config loading, the cancellation signal, and
// turning errors into a message plus an exit code scripts can trust.
import type { Command } from 'commander';
import { loadConfig, type Config } from '../config/config.js';
import { setLogLevel } from '@transship/core/log';
import { initTracing, shutdownTracing } from '@transship/core/tracing';
import { cancellationSignal } from './signals.js';
import { reportError } from './output.js';

export interface GlobalOptions {
  config?: string;
  logLevel?: string;
  json?: boolean;
  otlpEndpoint?: string;
}

function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals<GlobalOptions>();
}

export function loadCliConfig(flags: GlobalOptions, overrides: Record<string, unknown> = {}): Config {
  const config = loadConfig({ file: flags.config, flags: { ...overrides, ...(flags.logLevel ? { log: { level: flags.logLevel } } : {}), ...(flags.otlpEndpoint ? { otlpEndpoint: flags.otlpEndpoint } : {}) } });
  if (config.log?.level) setLogLevel(config.log.level);
  return config;
}

/** Runs a command body with cancellation and error reporting; sets process.exitCode instead of exiting abruptly. */
export async function runCommand(cmd: Command, flags: GlobalOptions, body: (ctx: { signal: AbortSignal }) => Promise<number | void>): Promise<void> {
  const all = Object.assign(flags, { ...globals(cmd), ...flags });
  const { signal, dispose } = cancellationSignal();
  try {
    if (all.logLevel) setLogLevel(all.logLevel);
    await initTracing(all.otlpEndpoint ?? process.env.OTEL_EXPORTER_OTLP_ENDPOINT);
    const code = await body({ signal });
    if (typeof code === 'number') process.exitCode = code;
  } catch (err) {
    process.exitCode = reportError(err, Boolean(all.json));
  } finally {
    dispose();
    await shutdownTracing();
  }
}
