// A tiny entry for running `transship doctor` before the lead wires registerDoctor into src/cli/main.ts:
// `node --import tsx test/support/doctor-entry.ts doctor --address … --state …`.
import { Command } from 'commander';
import { registerDoctor } from '../../src/cli/doctor.js';

const program = new Command('transship');
registerDoctor(program);
await program.parseAsync(process.argv);
