import type { Command } from 'commander';
import { evaluateKl, type KlResult } from '../../eval/kl.js';
import { evaluatePerplexity } from '../../eval/perplexity.js';
import { DEFAULT_EVAL_DATA, DEFAULT_MODEL_DIR } from '../../defaults.js';
import { deviceOption, positiveInt } from '../options.js';
import { ProgressBar } from '../progress.js';

interface EvalCliOptions {
  model: string;
  data: string;
  seqLen: number;
  maxWindows?: number;
  batchTokens?: number;
  workers?: number;
  device: 'auto' | 'cpu' | 'cuda' | 'webgpu';
  json?: boolean;
  dequantize?: boolean;
  reference?: string;
}

const pct = (x: number | null, digits = 3) => (x === null ? '—' : `${(100 * x).toFixed(digits)}`);
const pm = (x: number, e: number | null, f: (v: number) => string) => (e === null ? f(x) : `${f(x)} ± ${f(e)}`);

/** The human-readable comparison of `eval --reference` (the full set of statistics is in --json). */
export function formatKl(r: KlResult): string {
  const c = r.reference;
  const f6 = (v: number) => v.toFixed(6);
  const rows = [
    ['', 'model', 'reference'],
    ['perplexity', r.ppl.toFixed(4), c.ppl.toFixed(4)],
    ['mean NLL', r.nll.toFixed(6), c.nll.toFixed(6)],
  ];
  const width = Math.max(...rows.map((x) => x[0]!.length), 'KL divergence'.length) + 2;
  const line = (label: string, text: string) => `${label.padEnd(width)}${text}\n`;
  const cols = rows.map((x) => [x[0]!.padEnd(width), x[1]!.padStart(12), x[2]!.padStart(12)].join('').trimEnd()).join('\n');
  return (
    `${cols}\n\n` +
    line('PPL ratio', `${c.ppl_ratio.toFixed(6)}  (ln ${pm(c.ln_ppl_ratio, c.ln_ppl_ratio_stderr, f6)}; NLL correlation ${c.nll_correlation === null ? '—' : `${pct(c.nll_correlation, 2)}%`})`) +
    line('KL divergence', `mean ${pm(c.kl.mean, c.kl.mean_stderr, f6)}  median ${f6(c.kl.median)}  99% ${f6(c.kl.p99)}  99.9% ${f6(c.kl.p99_9)}  max ${f6(c.kl.max)}`) +
    line('same top-1', `${pm(c.top1_agreement, c.top1_agreement_stderr, (v) => pct(v))} %`) +
    line('mean |ΔNLL|', f6(c.mean_abs_delta_nll)) +
    line('Δp', `mean ${pm(c.delta_p.mean, c.delta_p.mean_stderr, (v) => pct(v))} %  RMS ${pct(c.delta_p.rms)} %`) +
    `reference ${c.model}\n` +
    `${r.predictions} predictions, ${r.windows} windows × ${r.seq_len}; ${r.seconds.toFixed(2)} s for both models, ${r.tokens_per_second.toFixed(0)} tokens/s on ${r.device}\n`
  );
}

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description(
      'Perplexity of a model on held-out text: whole file tokenized once, non-overlapping windows, exp(mean NLL). With --reference, also how far its next-token distributions are from a reference model\'s (KL divergence, top-1 agreement).',
    )
    .option('--model <dir>', 'checkpoint directory (fp16/bf16/fp32, or GPTQ)', DEFAULT_MODEL_DIR)
    .option(
      '--reference <dir>',
      "compare with this model (e.g. the fp original of a quantized --model) on the same windows: KL(P_reference ‖ P_model) per prediction (mean ± standard error, median, 99th percentile, …), top-1 agreement, both perplexities, Δp — llama-perplexity --kl-divergence's statistics; both models must share the tokenizer and vocabulary",
    )
    .option('--data <file>', 'text file (raw text, or .jsonl with a "text" field per line, joined with blank lines)', DEFAULT_EVAL_DATA)
    .option('--seq-len <n>', 'tokens per window; each window scores seq-len − 1 predictions', positiveInt('--seq-len'), 2048)
    .option('--max-windows <n>', 'evaluate only the first N windows', positiveInt('--max-windows'))
    .option('--batch-tokens <n>', 'tokens per onnxruntime run, memory vs speed (default 4096; 1024 per thread in parallel workers)', positiveInt('--batch-tokens'))
    .option(
      '--workers <n>',
      'CPU: engines running shares of the windows in parallel threads, cores split between them (default: one per core, as long as each gets two batches of work and the model fits the 2 GiB resident budget once per worker; else 1). With --reference each worker runs both models, which must fit the budget together',
      positiveInt('--workers'),
    )
    .addOption(deviceOption())
    .option('--dequantize', 'GPTQ checkpoints: dequantize weights to float32 instead of running onnxruntime\'s 4-bit MatMulNBits kernels')
    .option('--json', 'print one JSON object on stdout')
    .addHelpText(
      'after',
      '\nExamples:\n  moe-quant eval --model ./tiny-mixtral --data wiki.test.raw --seq-len 256 --max-windows 40 --json\n' +
        '  moe-quant eval --model ./moe-quant-out --reference ./tiny-mixtral --seq-len 256 --max-windows 40',
    )
    .action(async (opts: EvalCliOptions) => {
      const bar = new ProgressBar('eval');
      const common = {
        model: opts.model,
        data: opts.data,
        seqLen: opts.seqLen,
        maxWindows: opts.maxWindows,
        batchTokens: opts.batchTokens,
        workers: opts.workers,
        device: opts.device,
        int4Kernels: !opts.dequantize,
        onProgress: bar.callback,
        onDevice: (note: string) => process.stderr.write(`${note}\n`),
      };
      if (opts.reference !== undefined) {
        const r = await evaluateKl({ ...common, reference: opts.reference });
        process.stdout.write(opts.json ? `${JSON.stringify(r)}\n` : formatKl(r));
        return;
      }
      const r = await evaluatePerplexity(common);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(r)}\n`);
        return;
      }
      process.stdout.write(
        `perplexity ${r.ppl.toFixed(4)}  (mean NLL ${r.nll.toFixed(5)} over ${r.predictions} predictions, ${r.windows} windows × ${r.seq_len})\n` +
          `${r.seconds.toFixed(2)} s, ${r.tokens_per_second.toFixed(0)} tokens/s on ${r.device}\n`,
      );
    });
}
