/**
 * The moe-quant command line: parses arguments, calls the library, prints results. Errors the user can fix
 * (MoeQuantError) print one line and exit 2; the stack trace only with --debug.
 */
import { Command, CommanderError } from 'commander';
import { MoeQuantError } from '../errors.js';
import { abortActiveOutputs } from '../output/output-dir.js';
import { versions } from '../version.js';
import { registerCalibrate } from './commands/calibrate.js';
import { registerDoctor } from './commands/doctor.js';
import { registerEval } from './commands/eval.js';
import { registerInspect } from './commands/inspect.js';
import { registerQuantize } from './commands/quantize.js';
import { registerReport } from './commands/report.js';

export function buildProgram(): Command {
  const program = new Command('moe-quant')
    .description('Routing-aware 4-bit quantization of Mixture-of-Experts language models (Hugging Face checkpoints).')
    .version(versions()['moe-quant']!, '-V, --version', 'print the version and exit')
    .option('--debug', 'print stack traces for errors')
    .showHelpAfterError('(run with --help for usage)')
    // Argument errors read like every other error: "moe-quant: error: …" on one line.
    .configureOutput({ outputError: (str, write) => write(str.startsWith('error: ') ? `moe-quant: ${str}` : str) })
    .exitOverride(); // inherited by subcommands registered below: argument errors become exit code 2, not process.exit
  registerInspect(program);
  registerEval(program);
  registerCalibrate(program);
  registerQuantize(program);
  registerReport(program);
  registerDoctor(program);
  return program;
}

let signalsInstalled = false;
let exiting = false;

/**
 * SIGINT (Ctrl-C) / SIGTERM: remove the partial output of the run (its temporary directory and lock) and exit
 * with 130 / 143, as a shell reports a process ended by that signal.
 */
function installSignalHandlers(): void {
  if (signalsInstalled) return;
  signalsInstalled = true;
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.on(signal, () => {
      // Once: a signal can arrive twice (Ctrl-C reaches the whole process group, and the launcher forwards it too).
      if (exiting) return;
      exiting = true;
      const removed = abortActiveOutputs();
      const kept = removed.flatMap((r) => (r.partial ? [r.partial] : []));
      process.stderr.write(
        `\nmoe-quant: interrupted (${signal})${removed.length ? `; removed the partial output ${removed.map((r) => r.tmp).join(', ')}` : ''}` +
          `${kept.length ? ` (finished work kept in ${kept.join(', ')} for the next run)` : ''}\n`,
      );
      process.exit(code);
    });
  }
}

/** The error as one line on stderr, and with --json also as {"error": {"code", "message"}} on stdout. */
function report(argv: string[], code: string, message: string): void {
  if (argv.includes('--json')) process.stdout.write(`${JSON.stringify({ error: { code, message } })}\n`);
}

export async function main(argv: string[]): Promise<number> {
  installSignalHandlers();
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help / --version exit with code 0; argument errors were already printed by commander.
      if (e.exitCode === 0) return 0;
      report(argv, 'BAD_OPTION', e.message.replace(/^error: /, ''));
      return 2;
    }
    const debug = argv.includes('--debug');
    if (e instanceof MoeQuantError) {
      process.stderr.write(`moe-quant: error: ${e.message}\n`);
      if (debug && e.stack) process.stderr.write(`${e.stack}\n`);
      report(argv, e.code, e.message);
      return 2;
    }
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`moe-quant: internal error: ${msg}\n`);
    if (debug && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
    else process.stderr.write('(this is a bug in moe-quant; run with --debug for the stack trace)\n');
    report(argv, 'INTERNAL', msg);
    return 1;
  }
}
