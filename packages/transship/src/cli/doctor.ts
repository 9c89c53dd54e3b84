// `transship doctor`: find containerd shim/socket/bundle leftovers (read-only), and with --fix repair them safely.
// Exit codes: 0 healthy, 3 findings, 1 could not diagnose (containerd unreachable or an error).
import type { Command } from 'commander';
import { createInterface } from 'node:readline/promises';
import { TransshipError } from '@transship/core/errors';
import { runDoctor } from '@transship/containerd/doctor';
import { runCommand, type GlobalOptions } from './context.js';
import { collect } from './args.js';
import { parseDuration } from '@transship/core/duration';

interface DoctorFlags extends GlobalOptions {
  address: string;
  state: string;
  namespace?: string[];
  json?: boolean;
  prometheus?: string;
  fix?: boolean;
  yes?: boolean;
  removeContainers?: boolean;
  auditLog?: string;
  createdThreshold: string;
  minBundleAge: string;
  socketDir?: string;
  timeout: string;
  logs: boolean;
}


async function askOnTerminal(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) return false;
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('find containerd shim, socket and bundle leftovers; with --fix, repair them after re-checking each one')
    .option('--address <socket>', "containerd's gRPC socket", '/run/containerd/containerd.sock')
    .option('--state <dir>', "containerd's state dir", '/run/containerd')
    .option('--namespace <ns>', 'judge only this namespace (repeatable or comma-separated; default: all)', collect)
    .option('--json', 'print one JSON document (findings name their container id and namespace)')
    .option('--prometheus <file>', "also write node_exporter textfile metrics to this file")
    .option('--fix', 'plan repairs, confirm, act, then diagnose again')
    .option('--yes', 'with --fix: act without asking')
    .option('--remove-containers', 'with --fix: also allowed to remove container metadata (never otherwise)')
    .option('--audit-log <file>', 'with --fix: append JSON lines of what was seen and done')
    .option('--created-threshold <duration>', 'report tasks CREATED (and containers without task) for longer than this', '5m')
    .option('--min-bundle-age <duration>', 'a bundle changed this recently, with no shim or socket for it, is taken as still being written (not leaked)', '1s')
    .option('--socket-dir <dir>', 'where shim sockets live', '/run/containerd/s')
    .option('--timeout <duration>', 'deadline of one containerd API call', '5s')
    .option('--no-logs', 'do not read journalctl/dmesg for evidence')
    .action(async (flags: DoctorFlags, cmd: Command) => {
      await runCommand(cmd, flags, async ({ signal }) => {
        if (flags.yes && !flags.fix) throw new TransshipError('TS_USAGE', '--yes only makes sense with --fix');
        if (flags.removeContainers && !flags.fix) throw new TransshipError('TS_USAGE', '--remove-containers only makes sense with --fix');
        const r = await runDoctor({
          address: flags.address,
          stateDir: flags.state,
          namespaces: flags.namespace,
          json: flags.json,
          prometheus: flags.prometheus,
          fix: flags.fix,
          yes: flags.yes,
          removeContainers: flags.removeContainers,
          auditLog: flags.auditLog,
          createdThresholdMs: parseDuration(flags.createdThreshold, '--created-threshold'),
          minBundleAgeMs: parseDuration(flags.minBundleAge, '--min-bundle-age'),
          socketDir: flags.socketDir,
          timeoutMs: parseDuration(flags.timeout, '--timeout'),
          logs: flags.logs,
          signal,
          confirm: askOnTerminal,
        });
        return r.exitCode;
      });
    });
}
