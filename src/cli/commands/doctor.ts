import type { Command } from 'commander';
import { DEFAULT_EVAL_DATA, DEFAULT_MODEL_DIR } from '../../defaults.js';
import { checkDevice, DEVICE_CHECK_TOLERANCE } from '../../eval/device-check.js';
import type { Device } from '../../graph/session.js';
import { deviceOption, positiveInt } from '../options.js';

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description(
      'Check this machine\'s execution provider: the one --device picks, its adapter (and whether it is a software one), and the perplexity of one window on it against the CPU provider. Exit code 1 when they differ by more than ' +
        `${DEVICE_CHECK_TOLERANCE} relative.`,
    )
    .addOption(deviceOption())
    .option('--model <dir>', 'checkpoint directory', DEFAULT_MODEL_DIR)
    .option('--data <file>', 'text file (its first window is evaluated)', DEFAULT_EVAL_DATA)
    .option('--seq-len <n>', 'tokens in the window', positiveInt('--seq-len'), 256)
    .option('--json', 'print one JSON object on stdout')
    .addHelpText('after', '\nExample:\n  moe-quant doctor --device webgpu')
    .action(async (opts: { device: Device; model: string; data: string; seqLen: number; json?: boolean }) => {
      const r = await checkDevice({ device: opts.device, model: opts.model, data: opts.data, seqLen: opts.seqLen });
      if (!r.ok) process.exitCode = 1;
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(r)}\n`);
        return;
      }
      const lines = [
        `provider     ${r.device}${r.requested === 'auto' ? ' (chosen by --device auto)' : ''}`,
        `note         ${r.note}`,
        `adapter      ${r.device === 'webgpu' ? `${r.adapter ?? 'unknown'}${r.software ? ' — a software adapter (a CPU emulating a GPU), slower than --device cpu' : ''}` : '-'}`,
        `onnxruntime  ${r.onnxruntime}`,
        `check        perplexity of 1 window × ${r.seq_len} tokens: ` +
          (r.device === 'cpu' ? '' : `${r.device} ${r.ppl.device.toFixed(6)} (${r.seconds.device.toFixed(2)} s), `) +
          `cpu ${r.ppl.cpu.toFixed(6)} (${r.seconds.cpu.toFixed(2)} s)`,
        r.rel_diff === null
          ? 'result       no GPU provider in use; the CPU provider works'
          : `result       ${r.ok ? 'OK' : 'MISMATCH'}: relative difference ${r.rel_diff.toExponential(2)} (tolerance ${DEVICE_CHECK_TOLERANCE})`,
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
