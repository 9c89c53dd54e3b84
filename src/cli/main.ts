// The `transship` command line: one file per command, registered here.
import { Command } from 'commander';
import { registerCopy } from './copy.js';
import { registerLs } from './ls.js';
import { registerInspect } from './inspect.js';
import { registerVerify } from './verify.js';
import { registerPlacement } from './placement.js';
import { registerServe } from './serve.js';
import { registerDoctor } from './doctor.js';
import { ExitCode } from '../core/errors.js';

// The AWS SDK warns about Node 20 on every start; the warning is not actionable for our users.
process.env.AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE ??= '1';
const originalEmitWarning = process.emitWarning.bind(process);
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  const text = typeof warning === 'string' ? warning : warning.message;
  if (/NodeVersion|Node\.js version|aws-sdk/i.test(text) && /support|version/i.test(text)) return;
  (originalEmitWarning as (w: string | Error, ...r: unknown[]) => void)(warning, ...rest);
});

export function buildProgram(): Command {
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
  registerCopy(program);
  registerLs(program);
  registerInspect(program);
  registerVerify(program);
  registerPlacement(program);
  registerServe(program);
  registerDoctor(program);
  return program;
}

await buildProgram().parseAsync(process.argv);
