/**
 * One solve task: the modules quantized from one Hessian (an expert's gate and up, attention's q/k/v, one down_proj)
 * and their rel_error. The same function runs in the main thread or in a solve worker (solve-pool.ts); everything
 * it needs travels in the task, so the result does not depend on where it ran.
 */
import type { SessionPool } from '../graph/session.js';
import { GptqFactors, gptqQuantize } from '../quantization/gptq.js';
import { rtnQuantize, type QuantConfig, type QuantizedLinear } from '../quantization/quantizer.js';
import { relativeError } from './error.js';

export interface SolveSettings extends QuantConfig {
  damp: number;
  blockSize: number;
  actOrder: boolean;
}

export interface SolveTask {
  /** Hessian the modules are solved with; null: round-to-nearest. */
  H: Float32Array | null;
  /** Hessian rel_error is measured on (null: no calibration tokens, rel_error NaN); `'solve'`: the same as H. */
  errorH: Float32Array | 'solve' | null;
  /** The modules' original weights [N, K], all with the same K. */
  modules: Array<{ W: Float32Array; N: number; K: number }>;
  settings: SolveSettings;
}

export interface SolvedModule {
  q: QuantizedLinear;
  /** ‖WX − ŴX‖ / ‖WX‖ on the inputs of errorH. */
  relError: number;
  /** Wall time of the solve (not of rel_error). */
  seconds: number;
}

/** An output format's own solve of module `index` of a task (GGUF: on its block grid); `H` null: round-to-nearest. */
export type CustomSolve = (index: number, W: Float32Array, H: Float32Array | null) => Promise<QuantizedLinear & { hessianError?: number }>;

/**
 * Solve every module of `task` in order (modules of one Hessian share its factorization), with the min-max grid of
 * the settings or, given `custom`, the output format's own solve; rel_error either way.
 */
export async function runSolveTask(task: SolveTask, pool: SessionPool, custom?: CustomSolve): Promise<SolvedModule[]> {
  const { H, settings: s } = task;
  const errorH = task.errorH === 'solve' ? H : task.errorH;
  const factors = new GptqFactors();
  const cfg: QuantConfig = { bits: s.bits, groupSize: s.groupSize, sym: s.sym };
  const out: SolvedModule[] = [];
  for (const [i, { W, N, K }] of task.modules.entries()) {
    const t0 = performance.now();
    const q: QuantizedLinear & { hessianError?: number } = custom
      ? await custom(i, W, H)
      : H
        ? await gptqQuantize(W, N, K, H, { ...cfg, damp: s.damp, blockSize: s.blockSize, actOrder: s.actOrder, staticGroups: s.actOrder, factors }, pool)
        : rtnQuantize(W, N, K, cfg);
    const seconds = (performance.now() - t0) / 1000;
    // A GPTQ solve of that very H already knows ‖ΔX‖² (GptqResult.hessianError).
    const relError = errorH ? await relativeError(pool, W, q.dequantized, N, K, errorH, errorH === H ? q.hessianError : undefined) : NaN;
    out.push({ q, relError, seconds });
  }
  return out;
}

/** The buffers of a task's results, to move (not copy) them between threads. */
export function resultBuffers(results: SolvedModule[]): ArrayBuffer[] {
  return results.flatMap(({ q }) => [q.q, q.scales, q.zeros, q.gIdx, q.dequantized].map((a) => a.buffer as ArrayBuffer));
}
