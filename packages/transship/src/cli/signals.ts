// SIGINT/SIGTERM → one AbortController that every async path listens to. In-flight requests and multipart uploads
// are aborted by their own code; a safety timer makes sure the process is gone within 2 s even if something
// ignored the signal (and says so, because that is a bug). A second signal exits at once.
import { ExitCode } from '@transship/core/errors';

export function cancellationSignal(graceMs = 2000): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  let count = 0;
  const handler = (sig: NodeJS.Signals): void => {
    count++;
    if (count > 1) process.exit(ExitCode.cancelled);
    process.stderr.write(`\ntransship: ${sig} received, cancelling…\n`);
    controller.abort(new Error(`${sig} received`));
    setTimeout(() => {
      process.stderr.write('transship: work did not stop within the grace period; exiting\n');
      process.exit(ExitCode.cancelled);
    }, graceMs).unref();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}
