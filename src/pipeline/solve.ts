/**
 * One solve task: the modules quantized from one Hessian (an expert's gate and up, attention's q/k/v, one down_proj)
 * and their rel_error. The same function runs in the main thread or in a solve worker (solve-pool.ts); everything
 * it needs travels in the task, so the result does not depend on where it ran.
 */
import { BlockGrid, rtnGrid, type QuantType } from '../formats/gguf/quants.js';
import type { SessionPool } from '../graph/session.js';
import { GptqFactors, gptqFactorize, gptqQuantize, joinedHessianError, type GptqFactorization, type GptqOptions, type GptqResult } from '../quantization/gptq.js';
import { ROW_CHUNK } from '../quantization/gptq-block.js';
import { rtnQuantize, type QuantConfig, type QuantizedLinear } from '../quantization/quantizer.js';
import { relativeError } from './error.js';
import type { SolvePool } from './solve-pool.js';

export interface SolveSettings extends QuantConfig {
  damp: number;
  blockSize: number;
  actOrder: boolean;
}

export interface SolveTask {
  /**
   * Hessian the modules are solved with, or its factorization (row ranges of one module, see solveRowRanges: U on a
   * SharedArrayBuffer, so workers read it without a copy); null: round-to-nearest.
   */
  H: Float32Array | GptqFactorization | null;
  /** Hessian rel_error is measured on (null: no calibration tokens, rel_error NaN); `'solve'`: the same as H. */
  errorH: Float32Array | 'solve' | null;
  /**
   * The modules' original weights [N, K], all with the same K; `grid`: solved on that GGUF block type's grid instead
   * of the min-max grid of the settings (the result carries the tensor's bytes in `q.packed`).
   */
  modules: Array<{ W: Float32Array; N: number; K: number; grid?: QuantType }>;
  settings: SolveSettings;
}

export interface SolvedModule {
  q: QuantizedLinear;
  /** ‖WX − ŴX‖ / ‖WX‖ on the inputs of errorH. */
  relError: number;
  /** Wall time of the solve (not of rel_error). */
  seconds: number;
}

/** One module on a GGUF block grid (H null: round-to-nearest on it). */
async function gridSolve(W: Float32Array, N: number, K: number, type: QuantType, H: Float32Array | null, s: SolveSettings, factors: GptqFactors, pool: SessionPool): Promise<QuantizedLinear & { hessianError?: number }> {
  let levels: Uint8Array;
  let grid: BlockGrid;
  let dequantized: Float32Array;
  let hessianError: number | undefined;
  if (!H) ({ grid, levels, dequantized } = rtnGrid(W, N, K, type));
  else {
    grid = new BlockGrid(type, N, K);
    ({ q: levels, dequantized, hessianError } = await gptqQuantize(W, N, K, H, { bits: 4, groupSize: grid.blockLen, sym: false, damp: s.damp, blockSize: s.blockSize, actOrder: s.actOrder, grid, factors }, pool));
  }
  const q = { N, K, bits: s.bits, groupSize: grid.blockLen, sym: false, q: new Uint8Array(0), scales: new Float32Array(0), zeros: new Uint8Array(0), gIdx: new Int32Array(0), dequantized, packed: grid.pack(levels) };
  return hessianError === undefined ? q : { ...q, hessianError };
}

/**
 * Solve every module of `task` in order (modules of one Hessian share its factorization), with the min-max grid of
 * the settings or a module's GGUF block grid; rel_error either way.
 */
export async function runSolveTask(task: SolveTask, pool: SessionPool): Promise<SolvedModule[]> {
  const { H, settings: s } = task;
  const factored = H !== null && !(H instanceof Float32Array);
  if (factored && (task.modules.some((m) => m.grid) || task.errorH === 'solve')) throw new Error('runSolveTask: a factorized H serves the built-in solve without rel_error only');
  const errorH = task.errorH === 'solve' ? (H as Float32Array | null) : task.errorH;
  const factors = new GptqFactors();
  const cfg: QuantConfig = { bits: s.bits, groupSize: s.groupSize, sym: s.sym };
  const out: SolvedModule[] = [];
  for (const { W, N, K, grid } of task.modules) {
    const t0 = performance.now();
    const q: QuantizedLinear & { hessianError?: number } = grid
      ? await gridSolve(W, N, K, grid, H as Float32Array | null, s, factors, pool)
      : H
        ? await gptqQuantize(W, N, K, H, { ...gptqOptions(s), factors }, pool)
        : rtnQuantize(W, N, K, cfg);
    const seconds = (performance.now() - t0) / 1000;
    // A GPTQ solve of that very H already knows ‖ΔX‖² (GptqResult.hessianError).
    const relError = errorH ? await relativeError(pool, W, q.dequantized, N, K, errorH, errorH === H ? q.hessianError : undefined) : NaN;
    out.push({ q, relError, seconds });
  }
  return out;
}

const gptqOptions = (s: SolveSettings): GptqOptions => ({ bits: s.bits, groupSize: s.groupSize, sym: s.sym, damp: s.damp, blockSize: s.blockSize, actOrder: s.actOrder, staticGroups: s.actOrder });

/**
 * One module too large to wait for alone (a dense down_proj, o_proj) on all of `solver`'s workers: its Hessian is
 * factorized here once (onnxruntime on all cores), then each worker solves a range of W's rows from that U — rows
 * are independent given U — and the ranges are joined. Bit for bit what one solve gives, rel_error included
 * (tested): ‖ΔX‖² from the ranges' error sums, ‖WX‖² from one product here.
 */
export async function solveRowRanges(task: SolveTask, pool: SessionPool, solver: SolvePool): Promise<SolvedModule> {
  const { W, N, K } = task.modules[0]!;
  const H = task.H;
  if (task.modules.length !== 1 || !(H instanceof Float32Array)) throw new Error('solveRowRanges: one module and its Hessian');
  const t0 = performance.now();
  const f = await gptqFactorize(H, K, gptqOptions(task.settings), pool);
  // U on a SharedArrayBuffer, in its own element type (float64 for small K): every worker reads the same copy.
  const bytes = new SharedArrayBuffer(f.U.byteLength);
  const shared = f.U instanceof Float64Array ? new Float64Array(bytes) : new Float32Array(bytes);
  shared.set(f.U);
  const factorization: GptqFactorization = { ...f, U: shared };
  // Cut at multiples of ROW_CHUNK rows, so the ranges' error sums join into the whole solve's (gptq.ts errorSums).
  const ranges = rowRanges(N, solver.size, ROW_CHUNK);
  const parts = await Promise.all(
    ranges.map(([r0, r1]) => solver.solve({ H: factorization, errorH: null, modules: [{ W: W.subarray(r0 * K, r1 * K), N: r1 - r0, K }], settings: task.settings })),
  );
  const q = joinRows(parts.map((p) => p[0]!.q), N);
  const seconds = (performance.now() - t0) / 1000;
  const hessianError = joinedHessianError(parts.map((p) => p[0]!.q as GptqResult), factorization);
  const errorH = task.errorH === 'solve' ? H : task.errorH;
  const relError = errorH ? await relativeError(pool, W, q.dequantized, N, K, errorH, errorH === H ? hessianError : undefined) : NaN;
  return { q, relError, seconds };
}

/** At most `parts` near-equal ranges of `N` rows, cut at multiples of `align` (fewer when N is small). */
export function rowRanges(N: number, parts: number, align = 1): Array<[number, number]> {
  const units = Math.ceil(N / align);
  const n = Math.max(1, Math.min(parts, units));
  return Array.from({ length: n }, (_, i) => [Math.floor((i * units) / n) * align, Math.min(N, Math.floor(((i + 1) * units) / n) * align)]);
}

/** Row ranges of one module, in order, as one QuantizedLinear of `N` rows. */
export function joinRows(parts: QuantizedLinear[], N: number): QuantizedLinear {
  const first = parts[0]!;
  const cat = <A extends Uint8Array | Float32Array>(pick: (p: QuantizedLinear) => A, make: (n: number) => A): A => {
    const out = make(parts.reduce((a, p) => a + pick(p).length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(pick(p), at);
      at += pick(p).length;
    }
    return out;
  };
  return {
    ...first,
    N,
    q: cat((p) => p.q, (n) => new Uint8Array(n)),
    scales: cat((p) => p.scales, (n) => new Float32Array(n)),
    zeros: cat((p) => p.zeros, (n) => new Uint8Array(n)),
    dequantized: cat((p) => p.dequantized, (n) => new Float32Array(n)),
  };
}

/** The buffers of a task's results, to move (not copy) them between threads. */
export function resultBuffers(results: SolvedModule[]): ArrayBuffer[] {
  // (Each once: a transfer list may not name a buffer twice, e.g. two empty arrays that share one.)
  return [...new Set(results.flatMap(({ q }) => [q.q, q.scales, q.zeros, q.gIdx, q.dequantized, ...(q.packed ? [q.packed] : [])].map((a) => a.buffer as ArrayBuffer)))];
}
