/**
 * `eval --reference`: a model's next-token distributions against a reference model's (typically the fp original of
 * a quantized model), over the windows of `eval` (the same protocol: whole file tokenized once, non-overlapping
 * windows, seq-len − 1 predictions each) — KL divergence, top-1 agreement, both perplexities and Δp, with the
 * definitions of llama.cpp's `llama-perplexity --kl-divergence` (see kl-stats.ts). Unlike llama.cpp, which scores
 * only the second half of each window, every prediction counts, as in `eval`.
 * Both models see the same token ids, so they must tokenize the text identically and share the vocabulary size.
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadTokenizer } from '../checkpoint/tokenizer.js';
import { comparePositions, DEFAULT_HIDDEN_BYTES, hiddenPerToken, type ComparedPositions } from '../engine/compare.js';
import { createEngine, type Engine } from '../engine/engine.js';
import { readConfig } from '../engine/model.js';
import { ParallelNll, planWorkers } from '../engine/parallel-nll.js';
import { fail, MoeQuantError } from '../errors.js';
import { consecutiveWindows, readTextData } from './data.js';
import { compareStatistics, type Comparison } from './kl-stats.js';
import { checkOptions, quantizationOf, type EvalOptions, type EvalResult } from './perplexity.js';

export interface KlOptions extends EvalOptions {
  /** Checkpoint directory of the reference model: P in KL(P_ref ‖ P_model). */
  reference: string;
  /** Most bytes of both models' final hidden states held at once, all workers together (default 1 GiB; see comparePositions). */
  hiddenBytes?: number;
}

/** The reference model's own perplexity, and how the evaluated model compares with it. */
export interface ReferenceResult extends Comparison {
  model: string;
  ppl: number;
  nll: number;
  quantization: Record<string, unknown> | null;
}

/** EvalResult of the evaluated model (`seconds` covers both models), with the comparison against the reference. */
export interface KlResult extends EvalResult {
  reference: ReferenceResult;
}

function sameFileContent(a: string, b: string): boolean {
  const [ea, eb] = [fs.existsSync(a), fs.existsSync(b)];
  return ea === eb && (!ea || fs.readFileSync(a).equals(fs.readFileSync(b)));
}

/** The token ids of `text`, which both models must produce identically. */
function sharedTokenIds(model: string, reference: string, data: string, text: string): Int32Array {
  const ids = loadTokenizer(model).encode(text);
  if (['tokenizer.json', 'tokenizer_config.json'].every((f) => sameFileContent(path.join(model, f), path.join(reference, f)))) return ids;
  const refIds = asReference(() => loadTokenizer(reference)).encode(text);
  let i = 0;
  while (i < ids.length && i < refIds.length && ids[i] === refIds[i]) i++;
  if (i === ids.length && i === refIds.length) return ids;
  const where = i < ids.length && i < refIds.length ? `token ${i} is id ${ids[i]} for --model, ${refIds[i]} for --reference` : `${ids.length} tokens for --model, ${refIds.length} for --reference`;
  throw fail('BAD_OPTION', `--reference ${reference} tokenizes ${data} differently from --model ${model} (${where}); the KL divergence needs both models to share the tokenizer`);
}

/** Keep the predictions (all but each window's last position) and check they are finite. */
function predictions(p: ComparedPositions, windows: number, S: number): ComparedPositions {
  const n = windows * (S - 1);
  const out: ComparedPositions = { kl: new Float64Array(n), nllRef: new Float64Array(n), nll: new Float64Array(n), sameTop: new Uint8Array(n) };
  let j = 0;
  for (let w = 0; w < windows; w++) {
    for (let s = 0; s < S - 1; s++, j++) {
      const i = w * S + s;
      if (!Number.isFinite(p.nllRef[i]!)) throw fail('NUMERIC', `NaN/Inf in the reference model's logits (window ${w}, position ${s}); the checkpoint may be corrupt`);
      if (!Number.isFinite(p.nll[i]!)) throw fail('NUMERIC', `NaN/Inf in the model's logits (window ${w}, position ${s}); the checkpoint may be corrupt`);
      if (!Number.isFinite(p.kl[i]!)) throw fail('NUMERIC', `the KL divergence at window ${w}, position ${s} is not finite`);
      out.kl[j] = p.kl[i]!;
      out.nllRef[j] = p.nllRef[i]!;
      out.nll[j] = p.nll[i]!;
      out.sameTop[j] = p.sameTop[i]!;
    }
  }
  return out;
}

/** Errors about the reference checkpoint name the option (the messages say "model directory …"). */
function referenceError(e: unknown): unknown {
  return e instanceof MoeQuantError ? fail(e.code, `--reference: ${e.message}`, e) : e;
}
function asReference<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw referenceError(e);
  }
}

const mean = (x: Float64Array) => x.reduce((s, v) => s + v, 0) / x.length;

export async function evaluateKl(opts: KlOptions): Promise<KlResult> {
  const seqLen = opts.seqLen ?? 2048;
  checkOptions(seqLen, opts.maxWindows);
  // A missing or wrong model directory says so before the tokenizers do.
  readConfig(opts.model);
  asReference(() => readConfig(opts.reference));
  const text = readTextData(opts.data);
  const windows = consecutiveWindows(sharedTokenIds(opts.model, opts.reference, opts.data, text), seqLen, opts.maxWindows);
  const engine = await createEngine(opts.model, opts);
  let reference: Engine | null = null;
  try {
    reference = await createEngine(opts.reference, opts).catch((e: unknown): never => {
      throw referenceError(e);
    });
    const [V, Vref] = [engine.model.spec.vocabSize, reference.model.spec.vocabSize];
    if (V !== Vref)
      throw fail('BAD_OPTION', `--reference ${opts.reference} has a vocabulary of ${Vref} tokens and --model ${opts.model} one of ${V}: their next-token distributions cannot be compared`);
    const plan = planWorkers({
      device: engine.device,
      requested: opts.workers,
      threads: opts.threads,
      windows: windows.length,
      seqLen,
      batchTokens: opts.batchTokens,
      // Each worker holds both models.
      modelBytes: engine.weights.residentBytes + reference.weights.residentBytes,
      resident: engine.weights.resident && reference.weights.resident,
      cacheBytes: opts.cacheBytes,
    });
    opts.onDevice?.(plan.workers > 1 ? `${engine.deviceNote}; ${plan.workers} parallel workers × ${plan.threadsPerWorker} thread${plan.threadsPerWorker > 1 ? 's' : ''}, each running both models (${plan.reason})` : engine.deviceNote);
    const t0 = performance.now();
    // Workers share the hidden-state budget.
    const hiddenBytes = (opts.hiddenBytes ?? DEFAULT_HIDDEN_BYTES) / plan.workers;
    const compare = { batchTokens: plan.batchTokens, hiddenBytes, onProgress: opts.onProgress };
    let positions: ComparedPositions;
    if (plan.workers > 1) {
      const parallel = await ParallelNll.start(opts.model, { cacheBytes: opts.cacheBytes, int4Kernels: opts.int4Kernels }, plan, engine.model.spec.numLayers, {
        model: opts.reference,
        numLayers: reference.model.spec.numLayers,
        hiddenPerToken: hiddenPerToken(reference, engine),
      });
      try {
        positions = (await parallel.compare(windows, compare)).positions;
      } finally {
        await parallel.close();
      }
    } else {
      positions = await comparePositions(reference, engine, windows, compare);
    }
    const seconds = (performance.now() - t0) / 1000;
    const p = predictions(positions, windows.length, seqLen);
    const [nll, nllRef] = [mean(p.nll), mean(p.nllRef)];
    return {
      ppl: Math.exp(nll),
      nll,
      predictions: p.nll.length,
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
      reference: {
        model: path.resolve(opts.reference),
        ppl: Math.exp(nllRef),
        nll: nllRef,
        quantization: quantizationOf(reference),
        ...compareStatistics(p.kl, p.nllRef, p.nll, p.sameTop),
      },
    };
  } finally {
    await reference?.close();
    await engine.close();
  }
}
