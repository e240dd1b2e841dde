/**
 * The moe-quant command line: parses arguments, calls the library, prints results. Errors the user can fix
 * (MoeQuantError) print one line and exit 2; the stack trace only with --debug.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { MoeQuantError } from '../errors.js';
import { DEVICES } from '../graph/session.js';
import { registerCalibrate } from './commands/calibrate.js';
import { registerDoctor } from './commands/doctor.js';
import { registerEval } from './commands/eval.js';
import { registerInspect } from './commands/inspect.js';
import { registerQuantize } from './commands/quantize.js';
import { registerReport } from './commands/report.js';

/** Parse a positive integer option. */
export function positiveInt(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer.`);
    return n;
  };
}

export const deviceOption = () =>
  new Option('--device <device>', 'execution provider: auto tries cuda, then webgpu, then cpu').choices(DEVICES as string[]).default('auto');

export function buildProgram(): Command {
  const program = new Command('moe-quant')
    .description('Routing-aware 4-bit quantization of Mixture-of-Experts language models (Hugging Face checkpoints).')
    .option('--debug', 'print stack traces for errors')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ outputError: (str, write) => write(str) })
    .exitOverride(); // inherited by subcommands registered below: argument errors become exit code 2, not process.exit
  registerInspect(program);
  registerEval(program);
  registerCalibrate(program);
  registerQuantize(program);
  registerReport(program);
  registerDoctor(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help / --version exit with code 0; argument errors were already printed by commander.
      return e.exitCode === 0 ? 0 : 2;
    }
    const debug = argv.includes('--debug');
    if (e instanceof MoeQuantError) {
      process.stderr.write(`moe-quant: error: ${e.message}\n`);
      if (debug && e.stack) process.stderr.write(`${e.stack}\n`);
      return 2;
    }
    process.stderr.write(`moe-quant: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
    if (debug && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
    else process.stderr.write('(this is a bug in moe-quant; run with --debug for the stack trace)\n');
    return 1;
  }
}
