/**
 * Two models on the same windows, compared position by position (`eval --reference`). Each model runs layer-major
 * as in ForwardEngine.run, up to its final hidden states; then one head graph takes both models' hidden states and
 * returns, per position, KL(P_ref ‖ P_model) of the next-token distributions, both NLLs of the next token and both
 * argmax tokens. The vocabulary-sized logits stay inside onnxruntime.
 *
 * Memory: windows run in groups whose final hidden states (both models) fit in `hiddenBytes`, so neither
 * [tokens × vocab] nor the hidden states of a long file are ever held at once; per position only four numbers remain.
 */
import * as ort from 'onnxruntime-node';
import { fail } from '../errors.js';
import { buildKlHeadGraph } from '../graph/layer-graphs.js';
import { tensor } from '../graph/session.js';
import type { Engine } from './engine.js';
import { progressSteps, sequenceBatches } from './forward.js';

/** Per position [N·S] of the windows, in order; the last position of each window (no next token) holds NaN and 0. */
export interface ComparedPositions {
  /** KL(P_ref ‖ P_model) in nats. */
  kl: Float64Array;
  /** −log p_ref(next token), −log p_model(next token). */
  nllRef: Float64Array;
  nll: Float64Array;
  /** 1 where both models' most likely token (first argmax) is the same. */
  sameTop: Uint8Array;
}

export interface CompareOptions {
  /** Tokens per onnxruntime run (whole windows per batch), as RunOptions.batchTokens. */
  batchTokens?: number;
  /** Most bytes of final hidden states (both models) held at once; windows run in groups that fit (default 1 GiB). */
  hiddenBytes?: number;
  onProgress?(done: number, total: number): void;
}

export const DEFAULT_HIDDEN_BYTES = 2 ** 30;

/** Windows per group: whole batches, as many as fit in hiddenBytes (at least one batch). */
function groupSize(S: number, hiddenPerToken: number, opts: CompareOptions): number {
  const perBatch = Math.max(1, Math.floor((opts.batchTokens ?? 4096) / S));
  const fit = Math.floor((opts.hiddenBytes ?? DEFAULT_HIDDEN_BYTES) / (S * hiddenPerToken * 4));
  return Math.max(perBatch, Math.floor(fit / perBatch) * perBatch);
}

function groups(N: number, size: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < N; i += size) out.push([i, Math.min(N, i + size)]);
  return out;
}

/** Units of progress comparePositions reports: both models' layer-batches, plus one per head batch. */
export function compareSteps(refLayers: number, layers: number, hiddenPerToken: number, N: number, S: number, opts: CompareOptions = {}): number {
  const none = { head: 'none' as const, batchTokens: opts.batchTokens };
  return groups(N, groupSize(S, hiddenPerToken, opts)).reduce((t, [a, b]) => {
    const n = b - a;
    return t + progressSteps(refLayers, n, S, none) + progressSteps(layers, n, S, none) + sequenceBatches(n, S, opts.batchTokens).length;
  }, 0);
}

/** Hidden sizes of both models together (what groupSize and compareSteps take). */
export function hiddenPerToken(ref: Engine, model: Engine): number {
  return ref.model.spec.hiddenSize + model.model.spec.hiddenSize;
}

/**
 * Compare `model` with `ref` on every position of `windows` (all of one length; the same token ids go to both, so
 * they must share the tokenizer). Both engines should be on the same device; the head runs on the model's.
 */
export async function comparePositions(ref: Engine, model: Engine, windows: Int32Array[], opts: CompareOptions = {}): Promise<ComparedPositions> {
  const rs = ref.model.spec;
  const ms = model.model.spec;
  if (rs.vocabSize !== ms.vocabSize) throw fail('BAD_OPTION', `the reference has a vocabulary of ${rs.vocabSize} tokens and the model ${ms.vocabSize}: their next-token distributions cannot be compared`);
  const N = windows.length;
  if (N === 0) throw fail('BAD_DATA', 'no sequences to run');
  const S = windows[0]!.length;
  const V = ms.vocabSize;
  const perToken = hiddenPerToken(ref, model);
  const total = compareSteps(rs.numLayers, ms.numLayers, perToken, N, S, opts);
  let done = 0;
  const progress = (offset: number) => (d: number) => opts.onProgress?.(offset + d, total);

  const out: ComparedPositions = { kl: new Float64Array(N * S), nllRef: new Float64Array(N * S), nll: new Float64Array(N * S), sameTop: new Uint8Array(N * S) };
  const head = await model.pool.get(`head:kl:${rs.hiddenSize}:${rs.rmsNormEps}:${ms.hiddenSize}:${ms.rmsNormEps}:${V}`, () => buildKlHeadGraph(rs, ms, V));
  const chunkRows = headRows(model, V);
  const none = { head: 'none' as const, batchTokens: opts.batchTokens };

  for (const [a, b] of groups(N, groupSize(S, perToken, opts))) {
    const group = windows.slice(a, b);
    const hRef = (await ref.forward.run(group, { ...none, onProgress: progress(done) })).hidden!;
    done += progressSteps(rs.numLayers, group.length, S, none);
    const h = (await model.forward.run(group, { ...none, onProgress: progress(done) })).hidden!;
    done += progressSteps(ms.numLayers, group.length, S, none);
    const weights = {
      'w.ref.norm': weightTensor(ref, rs.finalNorm),
      'w.ref.lmHead': weightTensor(ref, rs.lmHead),
      'w.norm': weightTensor(model, ms.finalNorm),
      'w.lmHead': weightTensor(model, ms.lmHead),
    };
    for (const rows of sequenceBatches(group.length, S, opts.batchTokens)) {
      const T = rows.length * S;
      const first = rows[0]! * S; // within the group
      const targets = new BigInt64Array(T);
      rows.forEach((n, i) => {
        for (let s = 0; s + 1 < S; s++) targets[i * S + s] = BigInt(group[n]![s + 1]!);
      });
      for (let r0 = 0; r0 < T; r0 += chunkRows) {
        const r1 = Math.min(T, r0 + chunkRows);
        const rowsOf = (hidden: Float32Array, H: number) => tensor.f32(hidden.subarray((first + r0) * H, (first + r1) * H), [r1 - r0, H]);
        const y = await model.pool.run(head, {
          ...weights,
          'hidden.ref': rowsOf(hRef, rs.hiddenSize),
          hidden: rowsOf(h, ms.hiddenSize),
          targets: tensor.i64(targets.subarray(r0, r1), [r1 - r0]),
        });
        const at = a * S + first + r0;
        out.kl.set(y['kl']!.data as Float64Array, at);
        out.nllRef.set(y['nll_ref']!.data as Float32Array, at);
        out.nll.set(y['nll']!.data as Float64Array, at);
        const [topRef, top] = [y['top_ref']!.data as BigInt64Array, y['top']!.data as BigInt64Array];
        for (let i = 0; i < topRef.length; i++) out.sameTop[at + i] = topRef[i] === top[i] ? 1 : 0;
      }
      opts.onProgress?.(++done, total);
    }
    ref.weights.release([rs.finalNorm, rs.lmHead]);
    model.weights.release([ms.finalNorm, ms.lmHead]);
  }
  for (let w = 0; w < N; w++) {
    const last = w * S + S - 1;
    out.kl[last] = out.nllRef[last] = out.nll[last] = NaN;
    out.sameTop[last] = 0;
  }
  return out;
}

/**
 * Rows per run of the comparison head. It holds about eight [rows × vocab] float32 tensors at once (both logits, p,
 * D and the e^D − 1 terms), within ForwardEngine.headBytes. On the CPU provider its ~15 element-wise passes run
 * 1.6× faster when a tensor stays in cache (2 MiB: 128 rows of a 4k vocabulary) than on 8k-row runs; but at least 64
 * rows, so that a large lm_head (V × hidden) is read once per 64 rows, not per row.
 */
function headRows(model: Engine, V: number): number {
  const budget = Math.max(1, Math.floor(model.forward.headBytes / (V * 32)));
  return model.pool.device === 'cpu' ? Math.min(budget, Math.max(64, Math.floor(2 ** 21 / (V * 4)))) : budget;
}

function weightTensor(e: Engine, name: string): ort.Tensor {
  return tensor.f32(e.weights.get(name), e.weights.shape(name));
}
