// Starts the RGW test bed for humans and benchmarks: prints the coordinates as `export K=V` lines on stdout (so
// `eval "$(…)"`-style use works) and keeps the cluster until SIGINT/SIGTERM, then stops it.
//   node --import tsx test/support/rgw-cli.ts [--gateways N]
import { parseArgs } from 'node:util';
import { startRgw } from './rgw.js';

const { values } = parseArgs({ options: { gateways: { type: 'string', default: '1' } } });
const gateways = Number(values.gateways);

const controller = new AbortController();
const onSignal = () => controller.abort(new Error('interrupted'));
process.once('SIGINT', onSignal);
process.once('SIGTERM', onSignal);

try {
  const rgw = await startRgw({ gateways, signal: controller.signal, log: (line) => console.error(line) });
  for (const [k, v] of Object.entries(rgw.env)) console.log(`export ${k}=${shellQuote(v)}`);
  console.error(`# config and logs in ${rgw.dir}; Ctrl-C stops the cluster`);
  if (!controller.signal.aborted) {
    await new Promise<void>((resolve) => controller.signal.addEventListener('abort', () => resolve(), { once: true }));
  }
  await rgw.stop();
} catch (err) {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]*$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
