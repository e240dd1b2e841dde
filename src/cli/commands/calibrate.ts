import { InvalidArgumentError, Option, type Command } from 'commander';
import { calibrate, DEFAULT_BIAS_RATE, DEFAULT_BIAS_UPDATE, type RoutingBiasMode } from '../../calibration/calibrate.js';
import { DEFAULT_CALIB_DATA, DEFAULT_MODEL_DIR } from '../../defaults.js';
import type { BiasUpdate } from '../../routing/loss-free.js';
import { table } from '../format.js';
import { deviceOption, positiveInt } from '../main.js';
import { ProgressBar } from '../progress.js';

interface CalibrateCliOptions {
  model: string;
  data: string[];
  out: string;
  samples: number;
  seqLen: number;
  seed: number;
  routingBias: RoutingBiasMode;
  biasRate: number;
  biasUpdate: BiasUpdate;
  batchTokens: number;
  minTokens: number;
  device: 'auto' | 'cpu' | 'cuda' | 'webgpu';
  force?: boolean;
  saveHessians?: boolean;
  json?: boolean;
}

function nonNegativeInt(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer.`);
    return n;
  };
}

function positiveNumber(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive number.`);
    return n;
  };
}

export function registerCalibrate(program: Command): void {
  program
    .command('calibrate')
    .description(
      'Route calibration text through the model (optionally rebalanced with loss-free selection biases), record per-expert statistics and write a balance report.',
    )
    .option('--model <dir>', 'checkpoint directory', DEFAULT_MODEL_DIR)
    .option('--data <file>', 'calibration text (raw, or .jsonl with a "text" field); repeat for several files', (v: string, prev: string[]) => [...prev, v], [])
    .option('--out <dir>', 'output calibration directory (replaced if it is an earlier calibration)', 'moe-quant-calib')
    .option('--samples <n>', 'number of windows drawn at random from the tokenized data', positiveInt('--samples'), 128)
    .option('--seq-len <n>', 'tokens per window', positiveInt('--seq-len'), 512)
    .option('--seed <n>', 'seed for drawing windows', nonNegativeInt('--seed'), 0)
    .addOption(
      new Option('--routing-bias <mode>', 'loss-free: add a per-expert bias to selection scores, updated after each batch towards balance')
        .choices(['none', 'loss-free'])
        .default('loss-free'),
    )
    .option('--bias-rate <u>', 'bias update rate u', positiveNumber('--bias-rate'), DEFAULT_BIAS_RATE)
    .addOption(
      new Option('--bias-update <rule>', 'sign: δ += u·sign(mean − load); linear: δ += u·(mean − load)/mean').choices(['sign', 'linear']).default(DEFAULT_BIAS_UPDATE),
    )
    .option('--batch-tokens <n>', 'tokens per batch (the bias updates after each batch)', positiveInt('--batch-tokens'), 4096)
    .option('--min-tokens <n>', 'flag experts with fewer tokens than this as under-calibrated', nonNegativeInt('--min-tokens'), 16)
    .addOption(deviceOption())
    .option('--save-hessians', 'also write every linear\'s Hessians Σxxᵀ and Σc·xxᵀ (float32, one file per layer; prints the size first — tens of GB for real models)')
    .option('--force', 'replace an existing --out directory even if it is not a calibration directory')
    .option('--json', 'print the summary and output paths as one JSON object')
    .addHelpText(
      'after',
      '\nExamples:\n  moe-quant calibrate                       # bundled model and C4 text\n  moe-quant calibrate --model ./OLMoE-1B-7B --data c4.jsonl --out ./olmoe-calib --samples 128 --seq-len 512',
    )
    .action(async (opts: CalibrateCliOptions) => {
      const bar = new ProgressBar('calibrate');
      const r = await calibrate({
        ...opts,
        data: opts.data.length ? opts.data : [DEFAULT_CALIB_DATA],
        onProgress: bar.callback,
        onDevice: (note) => process.stderr.write(`${note}\n`),
        onNote: (note) => process.stderr.write(`${note}\n`),
      });
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ summary: r.summary, out: r.out, files: r.files, seconds: r.seconds })}\n`);
        return;
      }
      const s = r.summary;
      const row = (name: string, x: { maxvio: number; sigma: number; min_tokens: number }) => [name, x.maxvio.toFixed(3), x.sigma.toFixed(4), String(x.min_tokens)];
      process.stdout.write(
        `${table([
          ['routing', 'MaxVio', 'σ', 'min tokens'],
          row('natural', s.natural),
          row('used', s.used),
          row('natural (2nd half)', s.natural_second_half),
          row('used (2nd half)', s.used_second_half),
        ])}\n\nwrote ${r.out}\n  ${Object.values(r.files).join('\n  ')}\n`,
      );
    });
}
