/**
 * Perplexity with the protocol of ../shared/data/README.md: the whole file tokenized once, non-overlapping windows
 * of seqLen (tail dropped), each window scores its seqLen−1 next-token predictions, ppl = exp(Σ NLL / predictions).
 * NLLs are computed inside onnxruntime (log-softmax + gather), so the vocabulary-sized logits never reach JavaScript.
 */
import path from 'node:path';
import { loadTokenizer } from '../checkpoint/tokenizer.js';
import { createEngine, type Engine, type EngineOptions } from '../engine/engine.js';
import { readConfig } from '../engine/model.js';
import { ParallelNll, planWorkers } from '../engine/parallel-nll.js';
import { fail } from '../errors.js';
import { consecutiveWindows, readTextData } from './data.js';

export interface EvalOptions extends EngineOptions {
  model: string;
  data: string;
  seqLen?: number;
  maxWindows?: number;
  batchTokens?: number;
  /**
   * CPU provider: engines running shares of the windows in parallel worker threads, the intra-op threads split
   * between them (default: automatic, see planWorkers — one per core for models small enough to hold that often).
   */
  workers?: number;
  onProgress?(done: number, total: number): void;
  /** Called once the device is known (e.g. to print it). */
  onDevice?(note: string): void;
}

export interface EvalResult {
  ppl: number;
  /** Mean NLL per prediction (nats). */
  nll: number;
  predictions: number;
  windows: number;
  seq_len: number;
  model: string;
  data: string;
  device: string;
  seconds: number;
  tokens_per_second: number;
  /** Parallel engines the windows ran on (CPU), and onnxruntime intra-op threads each. */
  workers: number;
  threads_per_worker: number;
  /** The checkpoint's quantization (config.json quantization_config, or moe_quant for dequantized output); null for fp. */
  quantization: Record<string, unknown> | null;
}

export function checkOptions(seqLen: number, maxWindows: number | undefined): void {
  if (!Number.isInteger(seqLen) || seqLen < 2) throw fail('BAD_OPTION', `--seq-len must be an integer ≥ 2 (got ${seqLen})`);
  if (maxWindows !== undefined && (!Number.isInteger(maxWindows) || maxWindows < 1))
    throw fail('BAD_OPTION', `--max-windows must be a positive integer (got ${maxWindows})`);
}

/**
 * How many windows an evaluation of `data` will run, from the data and the tokenizer alone (no weights): lets a
 * command that evaluates after long work check its evaluation inputs first.
 */
export function countEvalWindows(
  opts: Pick<EvalOptions, 'model' | 'data' | 'seqLen' | 'maxWindows'> & { seqLenOption?: string },
): { windows: number; available: number } {
  const seqLen = opts.seqLen ?? 2048;
  checkOptions(seqLen, opts.maxWindows);
  readConfig(opts.model); // a missing or wrong --model says so before the tokenizer does
  const ids = loadTokenizer(opts.model).encode(readTextData(opts.data));
  const available = consecutiveWindows(ids, seqLen, undefined, opts.seqLenOption).length;
  return { windows: Math.min(available, opts.maxWindows ?? available), available };
}

export async function evaluatePerplexity(opts: EvalOptions): Promise<EvalResult> {
  const seqLen = opts.seqLen ?? 2048;
  checkOptions(seqLen, opts.maxWindows);
  const text = readTextData(opts.data);
  const engine = await createEngine(opts.model, opts);
  try {
    const ids = loadTokenizer(opts.model).encode(text);
    const windows = consecutiveWindows(ids, seqLen, opts.maxWindows);
    const plan = planWorkers({
      device: engine.device,
      requested: opts.workers,
      threads: opts.threads,
      windows: windows.length,
      seqLen,
      batchTokens: opts.batchTokens,
      modelBytes: engine.weights.residentBytes,
      resident: engine.weights.resident,
      cacheBytes: opts.cacheBytes,
    });
    opts.onDevice?.(plan.workers > 1 ? `${engine.deviceNote}; ${plan.workers} parallel workers × ${plan.threadsPerWorker} thread${plan.threadsPerWorker > 1 ? 's' : ''} (${plan.reason})` : engine.deviceNote);
    const t0 = performance.now();
    let nll: Float32Array;
    if (plan.workers > 1) {
      const parallel = await ParallelNll.start(opts.model, { cacheBytes: opts.cacheBytes, int4Kernels: opts.int4Kernels }, plan, engine.model.spec.numLayers);
      try {
        nll = (await parallel.run(windows, { batchTokens: plan.batchTokens, onProgress: opts.onProgress })).nll;
      } finally {
        await parallel.close();
      }
    } else {
      nll = (await engine.forward.run(windows, { head: 'nll', batchTokens: plan.batchTokens, onProgress: opts.onProgress })).nll!;
    }
    const seconds = (performance.now() - t0) / 1000;
    let total = 0;
    let predictions = 0;
    for (let w = 0; w < windows.length; w++) {
      for (let s = 0; s < seqLen - 1; s++) {
        const v = nll[w * seqLen + s]!;
        if (!Number.isFinite(v)) throw fail('NUMERIC', `NaN/Inf in the model's logits (window ${w}, position ${s}); the checkpoint may be corrupt`);
        total += v;
        predictions++;
      }
    }
    const mean = total / predictions;
    return {
      ppl: Math.exp(mean),
      nll: mean,
      predictions,
      windows: windows.length,
      seq_len: seqLen,
      model: path.resolve(opts.model),
      data: path.resolve(opts.data),
      device: engine.device,
      seconds,
      tokens_per_second: (windows.length * seqLen) / seconds,
      workers: plan.workers,
      threads_per_worker: plan.threadsPerWorker,
      quantization: quantizationOf(engine),
    };
  } finally {
    await engine.close();
  }
}

/** EvalResult.quantization of an opened model. */
export function quantizationOf(engine: Engine): Record<string, unknown> | null {
  return engine.model.gptq
    ? {
        ...(engine.model.config['quantization_config'] as Record<string, unknown>),
        kernel: [...engine.model.packed.keys()].some((n) => engine.weights.nbitsBlockSize(n) !== null) ? 'MatMulNBits' : 'dequantized-float32',
      }
    : engine.model.gguf
      ? { format: 'gguf', tensor_types: engine.model.gguf.typeCounts(), kernel: 'dequantized-float32' }
      : ((engine.model.config['moe_quant'] ?? null) as Record<string, unknown> | null);
}
