import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { DEFAULT_CALIB_DATA, DEFAULT_EVAL_DATA, DEFAULT_MODEL_DIR } from '../../defaults.js';
import { evaluateKl, type KlResult } from '../../eval/kl.js';
import { countEvalWindows } from '../../eval/perplexity.js';
import { quantizeModel } from '../../pipeline/quantize.js';
import { GGUF_TYPES } from '../../formats/gguf/writer.js';
import { AUTO_BUDGET_FRACTION, parseSize } from '../../calibration/memory.js';
import { bytes, table } from '../format.js';
import { deviceOption, positiveInt } from '../options.js';
import { ProgressBar } from '../progress.js';

interface QuantizeCliOptions {
  model: string;
  out: string;
  calib?: string;
  data: string[];
  method: 'rtn' | 'gptq' | 'agq';
  bits: number;
  groupSize: number;
  sym?: boolean;
  asym?: boolean;
  actOrder?: boolean;
  damp: number;
  blockSize: number;
  format: 'gptq' | 'gptq_v2' | 'dequantized' | 'gguf';
  ggufType: string;
  ggufKeep?: 'q8_0' | 'f16' | 'f32';
  ggufFallback?: boolean;
  skip?: string;
  routingBias: 'none' | 'loss-free';
  quantizeRouter?: boolean;
  trueSequential: boolean;
  device: 'auto' | 'cpu' | 'cuda' | 'webgpu';
  eval: boolean;
  evalData: string;
  evalSeqLen: number;
  evalWindows: number;
  force?: boolean;
  timings?: boolean;
  maxMemory?: number;
  solveThreads?: number;
  json?: boolean;
}

const groupSize = (v: string) => {
  const n = Number(v);
  if (!(n === -1 || (Number.isInteger(n) && n > 0))) throw new InvalidArgumentError('--group-size must be a positive integer or -1 (one group per row).');
  return n;
};
const fraction = (v: string) => {
  const n = Number(v);
  if (!(n > 0 && n < 1)) throw new InvalidArgumentError('--damp must be a number in (0, 1).');
  return n;
};

const size = (v: string) => {
  const n = parseSize(v);
  if (n === null) throw new InvalidArgumentError('--max-memory must be a size: bytes, or with K, M, G or T (powers of 1024), e.g. 4G or 4096M.');
  return n;
};

function filesBytes(files: string[]): number {
  return files.reduce((s, f) => s + fs.statSync(f).size, 0);
}

export function registerQuantize(program: Command): void {
  program
    .command('quantize')
    .description(
      'Quantize a MoE checkpoint to 4 bits (RTN, GPTQ or AGQ: GPTQ with affinity-weighted expert Hessians), write a GPTQ-format checkpoint with balance and quant reports, and compare it with the original: perplexity before and after, KL divergence and top-1 agreement (as eval --reference).',
    )
    .option('--model <dir>', 'checkpoint directory', DEFAULT_MODEL_DIR)
    .option('--out <dir>', 'output directory (never the model directory; replaced if it is an earlier moe-quant output)', 'moe-quant-out')
    .option('--calib <dir>', 'calibration directory from `moe-quant calibrate` (reuses its windows and routing biases)')
    .option('--data <file>', 'calibration text, calibrated inline (default: bundled C4 slice); repeatable', (v: string, p: string[]) => [...p, v], [])
    .addOption(new Option('--method <m>', 'rtn: round-to-nearest; gptq: GPTQ; agq: GPTQ with affinity-weighted expert Hessians').choices(['rtn', 'gptq', 'agq']).default('agq'))
    .option('--bits <n>', 'bits per weight (GPTQ and dequantized output): 2, 3, 4 or 8', positiveInt('--bits'), 4)
    .option('--group-size <n>', 'input channels per quantization group (-1: one group per row; when it does not divide a linear\'s K the last group is shorter)', groupSize, 128)
    .option('--sym', 'symmetric quantization (zero point at the middle of the grid)')
    .option('--asym', 'asymmetric quantization (default)')
    .option('--act-order', 'GPTQ: quantize columns in order of decreasing Hessian diagonal (static groups keep g_idx monotonic)')
    .option('--damp <f>', 'GPTQ dampening, fraction of the mean Hessian diagonal', fraction, 0.01)
    .option('--block-size <n>', 'GPTQ lazy-batch block size (columns)', positiveInt('--block-size'), 128)
    .addOption(
      new Option(
        '--format <f>',
        'gptq: zeros stored minus one (v1, widest support); gptq_v2: zeros as-is; dequantized: float32 weights; gguf: OUT/model.gguf for llama.cpp (see --gguf-type)',
      )
        .choices(['gptq', 'gptq_v2', 'dequantized', 'gguf'])
        .default('gptq'),
    )
    .addOption(
      new Option(
        '--gguf-type <t>',
        'GGUF type of the quantized linears, solved on its own grid (K-quants need rows of a multiple of 256); f32/f16 convert without calibration',
      )
        .choices([...GGUF_TYPES])
        .default('q4_0'),
    )
    .addOption(new Option('--gguf-keep <t>', 'GGUF type of the token embedding and output head (default q8_0; with --gguf-type f32/f16 that type)').choices(['q8_0', 'f16', 'f32']))
    .option('--gguf-fallback', "GGUF: tensors whose rows do not fit --gguf-type get llama-quantize's fallback type (q4_k→q5_0, q5_k→q5_1, q6_k→q8_0, else f16) instead of an error")
    .option('--skip <regex>', 'leave modules whose name matches unquantized (e.g. "layers\\.0\\.")')
    .addOption(new Option('--routing-bias <mode>', 'with --data: loss-free routing bias during inline calibration').choices(['none', 'loss-free']).default('loss-free'))
    .option('--quantize-router', 'also quantize routers (mlp.gate, shared_expert_gate) with plain GPTQ')
    .option(
      '--no-true-sequential',
      'collect all of a layer\'s Hessians in one pass over its original weights (the plain GPTQ protocol) instead of re-collecting after each module group',
    )
    .addOption(deviceOption())
    .option('--no-eval', 'skip the comparison with the original model')
    .option('--eval-data <file>', 'held-out text for the comparison (perplexity, KL divergence, top-1 agreement)', DEFAULT_EVAL_DATA)
    .option('--eval-seq-len <n>', 'comparison window length', positiveInt('--eval-seq-len'), 256)
    .option('--eval-windows <n>', 'comparison windows', positiveInt('--eval-windows'), 40)
    .option(
      '--max-memory <size>',
      `memory one layer may use while it is quantized (e.g. 4G, 4096M, bytes): decides how many experts' Hessians a pass collects and whether dequantized experts, then the calibration activations, wait in scratch files; results do not change (default: ${Math.round(AUTO_BUDGET_FRACTION * 100)}% of the memory available at start)`,
      size,
    )
    .option(
      '--solve-threads <n>',
      'GPTQ/AGQ solves running in parallel worker threads on the CPU, 1 = in the main thread; results do not change (default: one per core when the largest linear has ≥ 1M weights and --max-memory allows, else 1; GPU devices and GGUF solve in the main thread)',
      positiveInt('--solve-threads'),
    )
    .option('--force', 'replace an existing --out directory even if it is not a moe-quant output')
    .option(
      '--timings',
      'record per-module solve seconds in quant-report (off by default so that the same inputs give a byte-identical output directory)',
    )
    .option('--json', 'print the result as one JSON object')
    .addHelpText(
      'after',
      '\nExamples:\n  moe-quant quantize                                   # bundled tiny DeepSeek-V3, end to end\n' +
        '  moe-quant calibrate --model ./OLMoE --out calib && moe-quant quantize --model ./OLMoE --calib calib --out ./OLMoE-agq-4bit',
    )
    .action(async (opts: QuantizeCliOptions) => {
      const bars = new Map<string, ProgressBar>();
      const progress = (stage: string, d: number, t: number) => {
        if (!bars.has(stage)) bars.set(stage, new ProgressBar(stage));
        bars.get(stage)!.update(d, t);
      };
      const note = (s: string) => process.stderr.write(`${s}\n`);
      // The evaluation runs after the quantization: check its inputs first.
      const evalPlan = opts.eval
        ? countEvalWindows({ model: opts.model, data: opts.evalData, seqLen: opts.evalSeqLen, maxWindows: opts.evalWindows, seqLenOption: '--eval-seq-len' })
        : null;
      if (evalPlan && evalPlan.windows < opts.evalWindows)
        note(`--eval-windows ${opts.evalWindows}: ${path.basename(opts.evalData)} has ${evalPlan.available} windows of ${opts.evalSeqLen} tokens; evaluating all ${evalPlan.windows}`);
      const gguf = opts.format === 'gguf';
      const float = gguf && opts.ggufType.startsWith('f');
      const r = await quantizeModel({
        ...opts,
        gguf: { type: opts.ggufType as never, keep: opts.ggufKeep, fallback: Boolean(opts.ggufFallback) },
        sym: Boolean(opts.sym) && !opts.asym,
        data: opts.data.length ? opts.data : opts.calib || float ? undefined : [DEFAULT_CALIB_DATA],
        evalData: opts.eval ? opts.evalData : undefined,
        onProgress: progress,
        onNote: note,
        onDevice: note,
      });
      const label = gguf ? opts.ggufType.toUpperCase() : `${opts.bits}-bit`;
      // One pass over the evaluation windows runs both models and compares them position by position.
      let ev: KlResult | null = null;
      if (opts.eval)
        ev = await evaluateKl({
          model: r.out,
          reference: opts.model,
          data: opts.evalData,
          seqLen: opts.evalSeqLen,
          maxWindows: opts.evalWindows,
          device: opts.device,
          onProgress: (d, t) => progress(`eval fp vs ${label}`, d, t),
        });
      const sizeFp = filesBytes(r.files.source_model);
      const sizeQ = filesBytes(r.files.model);
      if (opts.json) {
        process.stdout.write(
          `${JSON.stringify({
            out: r.out,
            files: r.files,
            method: float ? null : opts.method,
            bits: r.report.bits,
            ...(gguf ? { gguf_type: opts.ggufType } : {}),
            ppl_fp: ev?.reference.ppl ?? null,
            ppl_quantized: ev?.ppl ?? null,
            kl_mean: ev?.reference.kl.mean ?? null,
            top1_agreement: ev?.reference.top1_agreement ?? null,
            eval: ev ? { data: ev.data, seq_len: ev.seq_len, windows: ev.windows, predictions: ev.predictions, seconds: ev.seconds, reference: ev.reference } : null,
            size_fp_bytes: sizeFp,
            size_quantized_bytes: sizeQ,
            maxvio: r.summary,
            seconds: r.seconds,
            memory: r.memory,
            fallbacks: r.report.fallbacks,
          })}\n`,
        );
        return;
      }
      const f = (x: number | undefined) => (x === undefined ? '—' : x.toFixed(3));
      const f3 = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : '—');
      const top1 = ev ? `${(100 * ev.reference.top1_agreement).toFixed(2)}%` : '—';
      process.stdout.write(
        `${table([
          ['method', 'ppl fp', `ppl ${label}`, 'KL', 'top-1', 'size fp', `size ${label}`, 'MaxVio natural', 'MaxVio biased'],
          [float ? '—' : opts.method.toUpperCase(), f(ev?.reference.ppl), f(ev?.ppl), ev ? ev.reference.kl.mean.toExponential(2) : '—', top1, bytes(sizeFp), bytes(sizeQ), f3(r.summary.maxvio_natural), f3(r.summary.maxvio_used)],
        ])}\n\n` +
          (ev
            ? `compared on ${path.basename(opts.evalData)}, ${ev.windows} windows × ${opts.evalSeqLen} tokens (more statistics: moe-quant eval --reference)\n` +
              `KL: mean KL(P_fp ‖ P_${label}) per prediction, nats (99th percentile ${ev.reference.kl.p99.toExponential(2)}); top-1: same most likely next token\n`
            : '') +
          `model:          ${gguf ? r.files.model[0] : r.out}\n` +
          (r.files.balance_report.length ? `balance report: ${r.files.balance_report.join(', ')}\n` : '') +
          `quant report:   ${r.files.quant_report_md}\n` +
          (r.report.fallbacks.length ? `fell back to RTN: ${r.report.fallbacks.map((x) => x.module).join(', ')}\n` : ''),
      );
    });
}
