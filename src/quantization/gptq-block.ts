/**
 * The sequential part of GPTQ: the columns inside one lazy-batch block (float64, in WebAssembly — wasm/columns.ts —
 * or JavaScript, with the updates between sub-blocks on onnxruntime Gemm).
 * Notation as in gptq.ts: W1 (the block's columns, stored as rows [B, N]), Err1, U = upper factor of H⁻¹, d = U[p,p].
 */
import type { SessionPool } from '../graph/session.js';
import { lazyUpdate, type GemmArray } from './ort-gemm.js';
import { quantizeValue, type GroupParams } from './quantizer.js';
import type { BlockGrid } from '../formats/gguf/quants.js';
import type { ColumnWorkspace } from './wasm/columns.js';

/** Inputs of {@link quantizeBlock}; arrays are modified in place where noted. */
export interface BlockArgs {
  /** The block's columns of the working W, as rows [B, N] (overwritten). */
  W1: Float64Array;
  /** Output: err of every column, [B, N] (Err1ᵀ). */
  Err1: GemmArray;
  /** Output: integer levels by position, [K, N]. */
  qT: Uint8Array;
  /** Upper factor of H⁻¹, [K, K] row-major, permuted order. */
  U: GemmArray;
  /**
   * Σ err² so far, one float64 sum per ROW_CHUNK rows (added to in place): each sum sees its rows' errors in the same
   * order however the rows of W are cut into ranges at multiples of ROW_CHUNK (pipeline/solve.ts solveRowRanges).
   */
  errSq: Float64Array;
  K: number;
  N: number;
  /** First position of the block. */
  i1: number;
  /** Columns in the block. */
  B: number;
  /** Group of each position. */
  gPos: Int32Array;
  /** Parameters of each group (fp16-exact scales, zero points; already set for every group the block uses). */
  groups: readonly GroupParams[];
  maxq: number;
  /** GGUF: the block grid levels and values come from (indexed by natural column perm[p]); scales/zeros unused. */
  grid?: BlockGrid;
  /** Position → natural column (with `grid`). */
  perm?: Int32Array;
  /**
   * The WebAssembly column step (min-max grid only): W1, Err1, the block's levels, U's block and the group parameters
   * then live in its memory (ws.layout), and levels reach qT when the block is done.
   */
  ws?: ColumnWorkspace;
}

/** Rows of W per pass over a block: 128 rows × 128 columns of float64 stay in L2. */
export const ROW_CHUNK = 128;

/**
 * One lazy-batch block, recursively blocked once more: the columns of each sub-block of `subBlock` columns run in
 * float64 ({@link quantizeColumns}); the update of the block's later columns by a finished sub-block,
 * W1[s1:, :] −= U[s0:s1, s1:]ᵀ · Err1[s0:s1, :], is one onnxruntime Gemm (in the element type of Err1). Same
 * arithmetic as the unblocked loop in another order; it moves ~(1 − subBlock/B) of the block's FMAs out of
 * JavaScript. Adds the block's err² to `a.errSq`.
 */
export async function quantizeBlock(a: BlockArgs, subBlock: number, pool: SessionPool): Promise<void> {
  const { W1, Err1, U, K, N, i1, B } = a;
  for (let s0 = 0; s0 < B; s0 += subBlock) {
    const s1 = Math.min(s0 + subBlock, B);
    if (a.grid) quantizeColumnsGrid(a, a.grid, s0, s1);
    else quantizeColumns(a, s0, s1);
    if (s1 >= B) break;
    const delta = await lazyUpdate(pool, U, K, [i1 + s0, i1 + s1], [i1 + s1, i1 + B], Err1.subarray(s0 * N, s1 * N), N);
    const base = s1 * N;
    for (let x = 0; x < delta.length; x++) W1[base + x] += delta[x]!;
  }
}

/**
 * Float64: columns s0..s1−1 of one block (W1 holds the block's columns as rows, [B, N]). For each column:
 * q = quant(w), err = (w − q)/d, W1[i+1:s1, :] −= U[i, i+1:s1] ⊗ err, Err1[i, :] = err. Output rows are
 * independent, so the work runs in chunks of rows that stay in cache. With a workspace (`a.ws`) the same steps run
 * in WebAssembly, otherwise in the JavaScript below. Adds err² to the chunks' sums.
 */
function quantizeColumns(a: BlockArgs, s0: number, s1: number): void {
  const { W1, Err1, qT, U, K, N, i1, gPos, groups, maxq, ws, errSq } = a;
  if (ws) {
    for (let n0 = 0; n0 < N; n0 += ROW_CHUNK) errSq[n0 / ROW_CHUNK] = ws.columns(s0, s1, n0, Math.min(n0 + ROW_CHUNK, N), i1, gPos, U, K, maxq, errSq[n0 / ROW_CHUNK]!);
    return;
  }
  for (let n0 = 0; n0 < N; n0 += ROW_CHUNK) {
    const n1 = Math.min(n0 + ROW_CHUNK, N);
    let loss = errSq[n0 / ROW_CHUNK]!;
    for (let i = s0; i < s1; i++) {
      const p = i1 + i;
      const { scale, zero } = groups[gPos[p]!]!;
      const d = U[p * K + p]!;
      const row = i * N;
      for (let n = n0; n < n1; n++) {
        const w = W1[row + n]!;
        const s = scale[n]!;
        const z = zero[n]!;
        const level = quantizeValue(w, s, z, maxq);
        qT[p * N + n] = level;
        const e = (w - (level - z) * s) / d;
        loss += e * e;
        Err1[row + n] = e;
        W1[row + n] = e; // the column is done: keep err in its place for the update below
      }
      // OBS update of the later columns of the sub-block, four at a time (fewer loads of err per FMA).
      const uRow = p * K + i1;
      let j = i + 1;
      for (; j + 3 < s1; j += 4) {
        const u0 = U[uRow + j]!;
        const u1 = U[uRow + j + 1]!;
        const u2 = U[uRow + j + 2]!;
        const u3 = U[uRow + j + 3]!;
        const r0 = j * N;
        const r1 = r0 + N;
        const r2 = r1 + N;
        const r3 = r2 + N;
        for (let n = n0; n < n1; n++) {
          const e = W1[row + n]!;
          W1[r0 + n] -= u0 * e;
          W1[r1 + n] -= u1 * e;
          W1[r2 + n] -= u2 * e;
          W1[r3 + n] -= u3 * e;
        }
      }
      for (; j < s1; j++) {
        const u0 = U[uRow + j]!;
        const r0 = j * N;
        for (let n = n0; n < n1; n++) W1[r0 + n] -= u0 * W1[row + n]!;
      }
    }
    errSq[n0 / ROW_CHUNK] = loss;
  }
}

/** {@link quantizeColumns} on a GGUF block grid: level and value of each element from the grid. */
function quantizeColumnsGrid(a: BlockArgs, grid: BlockGrid, s0: number, s1: number): void {
  const { W1, Err1, qT, U, K, N, i1, errSq } = a;
  const perm = a.perm!;
  for (let i = s0; i < s1; i++) {
    const p = i1 + i;
    const col = perm[p]!;
    const d = U[p * K + p]!;
    const row = i * N;
    for (let n = 0; n < N; n++) {
      const w = W1[row + n]!;
      const level = grid.level(w, n, col);
      qT[p * N + n] = level;
      const e = (w - grid.value(level, n, col)) / d;
      errSq[(n / ROW_CHUNK) | 0] += e * e;
      Err1[row + n] = e;
      W1[row + n] = e;
    }
    const uRow = p * K + i1;
    for (let j = i + 1; j < s1; j++) {
      const u = U[uRow + j]!;
      const r = j * N;
      for (let n = 0; n < N; n++) W1[r + n] -= u * W1[row + n]!;
    }
  }
}
