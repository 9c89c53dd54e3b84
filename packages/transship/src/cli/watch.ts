// `transship watch`: follow containerd's event stream — lifecycle spans, metrics on /metrics, post-delete leak
// checks, stuck/dead detection — until SIGINT/SIGTERM. Flags override the config file's `watch:` section, which
// overrides the environment (TRANSSHIP_CONTAINERD_ADDRESS, TRANSSHIP_CONTAINERD_STATE, TRANSSHIP_WATCH_LISTEN).
// `--once` (reconcile, check, print, exit) and `--duration` (watch for a while, print, exit) serve scripts and
// tests; exit codes as the doctor's: 0 nothing unhealthy, 3 findings, 1 containerd unreachable or an error.
import type { Command } from 'commander';
import type { Tracer } from '@opentelemetry/api';
import { ExitCode, TransshipError } from '@transship/core/errors';
import { loadCliConfig, runCommand, type GlobalOptions } from './context.js';
import { collect, parseHostPort } from './args.js';
import { parseDuration } from '@transship/core/duration';
import { printJson } from './output.js';

interface WatchFlags extends GlobalOptions {
  address?: string;
  state?: string;
  listen?: string;
  namespace?: string[];
  socketDir?: string;
  createdThreshold?: string;
  exitGrace?: string;
  leakCheckDelay?: string;
  leakCheckTimeout?: string;
  reconcileInterval?: string;
  checkInterval?: string;
  queueSize?: string;
  timeout: string;
  once?: boolean;
  duration?: string;
  json?: boolean;
}

export const DEFAULT_WATCH_LISTEN = '127.0.0.1:9469';

function positive(ms: number, flag: string): number {
  if (ms <= 0) throw new TransshipError('TS_USAGE', `${flag}: must be greater than zero`);
  return ms;
}

async function otlpTracer(endpoint: string | undefined): Promise<{ tracer: Tracer; spans: import('@transship/containerd/watch/span-export').SpanBacklog; shutdown(): Promise<void> } | undefined> {
  if (!endpoint) return undefined;
  // The watcher's own OTLP/HTTP tracer (not the SDK's provider + exporter: see otlp-tracer.ts for the measured why),
  // with a bounded span queue that counts drops and pushes back.
  const { OtlpTracer } = await import('@transship/containerd/watch/otlp-tracer');
  const url = endpoint.endsWith('/v1/traces') ? endpoint : `${endpoint.replace(/\/$/, '')}/v1/traces`;
  const tracer = new OtlpTracer({ url, serviceName: 'transship-watch' });
  return { tracer, spans: tracer.spans, shutdown: () => tracer.shutdown() };
}

export function registerWatch(program: Command): void {
  program
    .command('watch')
    .description("follow containerd's events: lifecycle spans, /metrics, post-delete leak checks, stuck and dead-shim detection")
    .option('--address <socket>', "containerd's gRPC socket (default: watch.address, else /run/containerd/containerd.sock)")
    .option('--state <dir>', "containerd's state dir (default: watch.state, else /run/containerd)")
    .option('--listen <host:port>', `serve /metrics, /healthz and /findings here (default: watch.listen, else ${DEFAULT_WATCH_LISTEN})`)
    .option('--namespace <ns>', 'follow only this namespace (repeatable or comma-separated; default: all)', collect)
    .option('--socket-dir <dir>', 'where shim sockets live (default /run/containerd/s)')
    .option('--created-threshold <duration>', 'a task CREATED longer than this is stuck (default 5m)')
    .option('--exit-grace <duration>', 'an init gone this long without an exit event is reported (default 10s)')
    .option('--leak-check-delay <duration>', 'first post-delete check this long after the delete (default 500ms)')
    .option('--leak-check-timeout <duration>', 'what is still there this long after the delete is a leak (default 10s)')
    .option('--reconcile-interval <duration>', 'reconcile with the containerd API this often (default 30s)')
    .option('--check-interval <duration>', 'look for stuck tasks and dead shims this often (default 5s)')
    .option('--queue-size <n>', 'events buffered between the stream and the processor; more are dropped and counted (default 10000)')
    .option('--timeout <duration>', 'deadline of one containerd API call', '5s')
    .option('--once', 'subscribe, reconcile, check once, print the findings and exit (no HTTP listener)')
    .option('--duration <duration>', 'watch this long, then print the findings and exit')
    .option('--json', 'with --once/--duration: print one JSON document')
    .action(async (flags: WatchFlags, cmd: Command) => {
      await runCommand(cmd, flags, async ({ signal }) => {
        const config = loadCliConfig(flags);
        const w = config.watch ?? {};
        const dur = (flag: string, value: string | undefined, fallback: string | undefined): number | undefined => (value ?? fallback) === undefined ? undefined : positive(parseDuration((value ?? fallback) as string, flag), flag);
        if (flags.once && flags.duration) throw new TransshipError('TS_USAGE', '--once and --duration exclude each other');
        if (flags.json && !flags.once && !flags.duration) throw new TransshipError('TS_USAGE', '--json only makes sense with --once or --duration (the long-running watcher logs JSON on stderr)');
        const queueSize = flags.queueSize === undefined ? w.queueSize : Number(flags.queueSize);
        if (queueSize !== undefined && (!Number.isInteger(queueSize) || queueSize < 1)) throw new TransshipError('TS_USAGE', `--queue-size: expected a positive integer, got "${flags.queueSize}"`);
        const address = flags.address ?? w.address ?? '/run/containerd/containerd.sock';
        if (!address.replace(/^unix:\/\//, '').startsWith('/')) throw new TransshipError('TS_USAGE', `--address: expected an absolute socket path, got "${address}"`);
        const stateDir = flags.state ?? w.state ?? '/run/containerd';
        if (!stateDir.startsWith('/')) throw new TransshipError('TS_USAGE', `--state: expected an absolute directory, got "${stateDir}"`);
        const listen = flags.once || flags.duration ? undefined : parseHostPort(flags.listen ?? w.listen ?? DEFAULT_WATCH_LISTEN);
        const timeoutMs = positive(parseDuration(flags.timeout, '--timeout'), '--timeout');
        const durationMs = flags.duration === undefined ? undefined : parseDuration(flags.duration, '--duration');

        const { Watcher } = await import('@transship/containerd/watch/watcher');
        const otlp = await otlpTracer(flags.otlpEndpoint ?? config.otlpEndpoint);
        const watcher = new Watcher({
          address,
          stateDir,
          namespaces: flags.namespace ?? w.namespaces,
          socketDir: flags.socketDir ?? w.socketDir,
          queueCapacity: queueSize,
          reconcileIntervalMs: dur('--reconcile-interval', flags.reconcileInterval, w.reconcileInterval),
          checkIntervalMs: dur('--check-interval', flags.checkInterval, w.checkInterval),
          stuck: { createdThresholdMs: dur('--created-threshold', flags.createdThreshold, w.createdThreshold), exitGraceMs: dur('--exit-grace', flags.exitGrace, w.exitGrace) },
          leakCheck: { delayMs: dur('--leak-check-delay', flags.leakCheckDelay, w.leakCheckDelay), timeoutMs: dur('--leak-check-timeout', flags.leakCheckTimeout, w.leakCheckTimeout) },
          timeoutMs,
          // A one-shot run must not wait forever for a containerd that is not there.
          retry: listen ? undefined : { maxElapsedMs: timeoutMs * 2 },
          tracer: otlp?.tracer,
          spans: otlp?.spans,
        });
        const stop = new AbortController();
        const onAbort = (): void => stop.abort(signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        const running = watcher.run(stop.signal);
        let http: Awaited<ReturnType<typeof import('@transship/containerd/watch/http').serveWatchHttp>> | undefined;
        try {
          if (listen) {
            const { serveWatchHttp } = await import('@transship/containerd/watch/http');
            http = await serveWatchHttp(watcher, listen.host, listen.port).catch((err: unknown) => {
              throw new TransshipError('TS_USAGE', `--listen ${listen.host}:${listen.port}: ${(err as Error).message}`, { cause: err });
            });
            process.stderr.write(`transship: watching containerd at ${address}; metrics on http://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${http.port}/metrics\n`);
            await running;
            return ExitCode.ok;
          }
          // --once / --duration: ready (subscribed + first reconcile), optionally watch, one final check, report.
          await Promise.race([watcher.ready(stop.signal), running.then(() => { throw new TransshipError('TS_CONTAINERD_UNREACHABLE', `containerd at ${address} did not answer`); })]);
          if (durationMs) await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, durationMs);
            stop.signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
          });
          watcher.requestCheck();
          const before = watcher.status().reconciles;
          while (watcher.status().reconciles === before && !stop.signal.aborted) await new Promise((r) => setTimeout(r, 20));
          const findings = watcher.findings;
          const unhealthy = findings.filter((f) => f.severity !== 'info');
          if (flags.json) printJson({ healthy: unhealthy.length === 0, status: watcher.status(), findings });
          else {
            const s = watcher.status();
            process.stdout.write(`containerd ${address}: ${s.containersTracked} containers followed, ${s.eventsReceived} events, ${s.eventsDropped} dropped, ${findings.length} finding(s)\n`);
            for (const f of findings) process.stdout.write(`${f.severity.padEnd(8)} ${f.code.padEnd(24)} ${f.namespace ?? ''}/${f.containerId ?? ''}  ${f.summary}\n`);
          }
          return unhealthy.length > 0 ? ExitCode.findings : ExitCode.ok;
        } finally {
          stop.abort(new Error('watch finished'));
          signal.removeEventListener('abort', onAbort);
          await running.catch((err: unknown) => {
            if (!signal.aborted) throw err;
          });
          await http?.close();
          await otlp?.shutdown();
        }
      });
    });
}
