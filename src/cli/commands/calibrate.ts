import { Option, type Command } from 'commander';
import { calibrate, DEFAULT_BIAS_RATE, DEFAULT_BIAS_UPDATE, type RoutingBiasMode } from '../../calibration/calibrate.js';
import { DEFAULT_CALIB_DATA, DEFAULT_MODEL_DIR } from '../../defaults.js';
import type { BiasUpdate } from '../../routing/loss-free.js';
import { EBSS_DEFAULTS, type EbssStart } from '../../calibration/samplers/ebss.js';
import { SAMPLERS, type SamplerName } from '../../calibration/samplers/types.js';
import { table } from '../format.js';
import { deviceOption, nonNegativeInt, positiveInt, positiveNumber } from '../options.js';
import { ProgressBar } from '../progress.js';

interface CalibrateCliOptions {
  model: string;
  data: string[];
  sampler: SamplerName;
  ebssWidth: number;
  ebssTau: number;
  ebssStart: EbssStart;
  /** --no-repeat-ngram (commander names a --no- option after the rest of it). */
  repeatNgram: number;
  ebssBatch: number;
  pool: string[];
  poolWindows: number;
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

export function registerCalibrate(program: Command): void {
  program
    .command('calibrate')
    .description(
      'Route calibration text through the model (optionally rebalanced with loss-free selection biases), record per-expert statistics and write a balance report.',
    )
    .option('--model <dir>', 'checkpoint directory', DEFAULT_MODEL_DIR)
    .addOption(
      new Option('--sampler <name>', 'where the windows come from: text (random windows of --data), ebss (the model writes them, expert-balanced beam search), balanced (the most evenly routed set chosen from --pool)')
        .choices(SAMPLERS as string[])
        .default('text'),
    )
    .option('--data <file>', 'text sampler: calibration text (raw, or .jsonl with a "text" field); repeat for several files (default: the bundled C4 slice)', (v: string, prev: string[]) => [...prev, v], [])
    .option('--ebss-width <w>', 'ebss: beams per sample', positiveInt('--ebss-width'), EBSS_DEFAULTS.width)
    .option('--ebss-tau <t>', 'ebss: balance temperature τ in score = NLL/len + σ/τ (smaller weighs balance more)', positiveNumber('--ebss-tau'), EBSS_DEFAULTS.tau)
    .addOption(new Option('--ebss-start <mode>', 'ebss: first token of each sample: random (seeded, non-special) or ids (0, 1, 2, …, as in the released EBSS data)').choices(['random', 'ids']).default(EBSS_DEFAULTS.start))
    .option('--no-repeat-ngram <n>', 'ebss: forbid repeating an n-gram within a beam (0 = off, as published)', nonNegativeInt('--no-repeat-ngram'), EBSS_DEFAULTS.noRepeatNgram)
    .option('--ebss-batch <n>', 'ebss: samples whose beams are decoded together (memory vs speed)', positiveInt('--ebss-batch'), EBSS_DEFAULTS.batchSamples)
    .option('--pool <file|dir>', 'balanced: a text file (cut into windows) or a calibration directory to choose from; repeatable', (v: string, prev: string[]) => [...prev, v], [])
    .option('--pool-windows <n>', 'balanced: windows taken at random (seeded) from each text file of the pool', positiveInt('--pool-windows'), 256)
    .option('--out <dir>', 'output calibration directory (replaced if it is an earlier calibration)', 'moe-quant-calib')
    .option('--samples <n>', 'number of calibration windows (drawn, generated or selected)', positiveInt('--samples'), 128)
    .option('--seq-len <n>', 'tokens per window', positiveInt('--seq-len'), 512)
    .option('--seed <n>', 'seed for drawing windows, EBSS start tokens and pool windows', nonNegativeInt('--seed'), 0)
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
    .option('--min-tokens <n>', 'flag experts with fewer tokens than this as under-calibrated (balanced: a constraint on the chosen set)', nonNegativeInt('--min-tokens'), 16)
    .addOption(deviceOption())
    .option('--save-hessians', 'also write every linear\'s Hessians Σxxᵀ and Σc·xxᵀ (float32, one file per layer; prints the size first — tens of GB for real models)')
    .option('--force', 'replace an existing --out directory even if it is not a calibration directory')
    .option('--json', 'print the summary and output paths as one JSON object')
    .addHelpText(
      'after',
      '\nExamples:\n  moe-quant calibrate                       # bundled model and C4 text\n  moe-quant calibrate --model ./OLMoE-1B-7B --data c4.jsonl --out ./olmoe-calib --samples 128 --seq-len 512',
    )
    .action(async (opts: CalibrateCliOptions) => {
      const bars = new Map<string, ProgressBar>();
      const r = await calibrate({
        ...opts,
        data: opts.data.length ? opts.data : opts.sampler === 'text' ? [DEFAULT_CALIB_DATA] : [],
        ebss: { width: opts.ebssWidth, tau: opts.ebssTau, start: opts.ebssStart, noRepeatNgram: opts.repeatNgram, batchSamples: opts.ebssBatch },
        onProgress: (d, t, stage = 'calibrate', detail) => {
          if (!bars.has(stage)) bars.set(stage, new ProgressBar(stage));
          bars.get(stage)!.update(d, t, detail);
        },
        onDevice: (note) => process.stderr.write(`${note}\n`),
        onNote: (note) => process.stderr.write(`${note}\n`),
      });
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ summary: r.summary, sampler: r.sampler, out: r.out, files: r.files, seconds: r.seconds })}\n`);
        return;
      }
      const s = r.summary;
      const row = (name: string, x: { maxvio: number; sigma: number; min_tokens: number }) => [name, x.maxvio.toFixed(3), x.sigma.toFixed(4), String(x.min_tokens)];
      const sampler = r.sampler;
      const samplerLine =
        sampler['name'] === 'ebss'
          ? `ebss: distinct 4-grams ${(sampler['distinct_4gram'] as number).toFixed(3)}, ${((sampler['tokens_per_second'] as number | null) ?? 0).toFixed(0)} tokens/s\n`
          : sampler['name'] === 'balanced'
            ? `balanced: σ ${(sampler['sigma_selected'] as number).toFixed(4)} of the chosen set, ${(sampler['sigma_pool'] as number).toFixed(4)} of the whole pool\n`
            : '';
      process.stdout.write(
        `${table([
          ['routing', 'MaxVio', 'σ', 'min tokens'],
          row('natural', s.natural),
          row('used', s.used),
          row('natural (2nd half)', s.natural_second_half),
          row('used (2nd half)', s.used_second_half),
        ])}\n\n${samplerLine}wrote ${r.out}\n  ${Object.values(r.files).join('\n  ')}\n`,
      );
    });
}
