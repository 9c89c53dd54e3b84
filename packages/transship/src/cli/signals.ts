// SIGINT/SIGTERM → one AbortController that every async path listens to. In-flight requests and multipart uploads
// are aborted by their own code; a safety timer makes sure the process is gone within 2 s even if something
// ignored the signal (and says so, because that is a bug). A second signal exits at once.
import { ExitCode } from '@transship/core/errors';
import { log } from '@transship/core/log';

/**
 * A person at a terminal reads a sentence; a service manager's journal (systemd, Kubernetes) gets the structured
 * log line, so stderr of a service holds only JSON lines.
 */
function notice(text: string, level: 'warn' | 'error'): void {
  if (process.stderr.isTTY) process.stderr.write(`\ntransship: ${text}\n`);
  else log[level]({ event: 'signal' }, text);
}

export function cancellationSignal(graceMs = 2000): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  let count = 0;
  const handler = (sig: NodeJS.Signals): void => {
    count++;
    if (count > 1) process.exit(ExitCode.cancelled);
    notice(`${sig} received, cancelling…`, 'warn');
    controller.abort(new Error(`${sig} received`));
    setTimeout(() => {
      notice('work did not stop within the grace period; exiting', 'error');
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
