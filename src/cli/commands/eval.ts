import type { Command } from 'commander';
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
}

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('Perplexity of a model on held-out text: whole file tokenized once, non-overlapping windows, exp(mean NLL).')
    .option('--model <dir>', 'checkpoint directory (fp16/bf16/fp32)', DEFAULT_MODEL_DIR)
    .option('--data <file>', 'text file (raw text, or .jsonl with a "text" field per line, joined with blank lines)', DEFAULT_EVAL_DATA)
    .option('--seq-len <n>', 'tokens per window; each window scores seq-len − 1 predictions', positiveInt('--seq-len'), 2048)
    .option('--max-windows <n>', 'evaluate only the first N windows', positiveInt('--max-windows'))
    .option('--batch-tokens <n>', 'tokens per onnxruntime run, memory vs speed (default 4096; 1024 per thread in parallel workers)', positiveInt('--batch-tokens'))
    .option(
      '--workers <n>',
      'CPU: engines running shares of the windows in parallel threads, cores split between them (default: one per core, as long as each gets two batches of work and the model fits the 2 GiB resident budget once per worker; else 1)',
      positiveInt('--workers'),
    )
    .addOption(deviceOption())
    .option('--dequantize', 'GPTQ checkpoints: dequantize weights to float32 instead of running onnxruntime\'s 4-bit MatMulNBits kernels')
    .option('--json', 'print one JSON object on stdout')
    .addHelpText('after', '\nExample:\n  moe-quant eval --model ./tiny-mixtral --data wiki.test.raw --seq-len 256 --max-windows 40 --json')
    .action(async (opts: EvalCliOptions) => {
      const bar = new ProgressBar('eval');
      const r = await evaluatePerplexity({
        model: opts.model,
        data: opts.data,
        seqLen: opts.seqLen,
        maxWindows: opts.maxWindows,
        batchTokens: opts.batchTokens,
        workers: opts.workers,
        device: opts.device,
        int4Kernels: !opts.dequantize,
        onProgress: bar.callback,
        onDevice: (note) => process.stderr.write(`${note}\n`),
      });
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
