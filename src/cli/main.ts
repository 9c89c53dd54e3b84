// The `transship` command line: one file per command, registered here.
import { Command } from 'commander';
import type { Command as CommandType } from 'commander';
import { ExitCode } from '../core/errors.js';

// The AWS SDK warns about Node 20 on every start; the warning is not actionable for our users.
process.env.AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE ??= '1';
const originalEmitWarning = process.emitWarning.bind(process);
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  const text = typeof warning === 'string' ? warning : warning.message;
  if (/NodeVersion|Node\.js version|aws-sdk/i.test(text) && /support|version/i.test(text)) return;
  (originalEmitWarning as (w: string | Error, ...r: unknown[]) => void)(warning, ...rest);
});

// Commands load only when named: `serve` pulls in fastify, `doctor` gRPC, the stores the AWS SDK. Loading them all
// for every invocation cost ~1 s and ~40 MB on this machine.
const COMMANDS: Record<string, () => Promise<(p: CommandType) => void>> = {
  copy: async () => (await import('./copy.js')).registerCopy,
  ls: async () => (await import('./ls.js')).registerLs,
  inspect: async () => (await import('./inspect.js')).registerInspect,
  verify: async () => (await import('./verify.js')).registerVerify,
  migrate: async () => (await import('./migrate.js')).registerMigrate,
  placement: async () => (await import('./placement.js')).registerPlacement,
  replicate: async () => (await import('./placement.js')).registerPlacement,
  cost: async () => (await import('./placement.js')).registerPlacement,
  serve: async () => (await import('./serve.js')).registerServe,
  doctor: async () => (await import('./doctor.js')).registerDoctor,
  watch: async () => (await import('./watch.js')).registerWatch,
  gc: async () => (await import('./gc.js')).registerGc,
};

export async function buildProgram(argv: readonly string[] = process.argv): Promise<Command> {
  const program = new Command('transship')
    .description('Move OCI images into S3-compatible storage once: digest dedup, conditional writes, one retry discipline.')
    .version('0.1.0')
    .option('--config <file>', 'YAML config file (also TRANSSHIP_CONFIG)')
    .option('--log-level <level>', 'trace|debug|info|warn|error|silent (logs are JSON on stderr)')
    .option('--otlp-endpoint <url>', 'export OpenTelemetry spans to this OTLP/HTTP endpoint')
    .showHelpAfterError()
    .exitOverride((err) => {
      process.exit(err.exitCode === 0 ? 0 : ExitCode.usage);
    });
  const named = argv.slice(2).find((a) => !a.startsWith('-') && a in COMMANDS);
  const loaders = named ? [COMMANDS[named]!] : [...new Set(Object.values(COMMANDS))];
  const registered = new Set<unknown>();
  for (const load of loaders) {
    const register = await load();
    if (registered.has(register)) continue;
    registered.add(register);
    register(program);
  }
  return program;
}

await (await buildProgram()).parseAsync(process.argv);
