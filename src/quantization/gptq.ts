/**
 * GPTQ (Frantar et al. 2022), following the reference `GPTQ.fasterquant` of IST-DASLab/gptq step by step.
 * AGQ (MoEQuant) is the same solver fed with the affinity-weighted Hessian; the caller chooses H.
 *
 * Paper / reference notation → code:
 *   W [N, K]        → `W` (input, PyTorch [out, in]); the working copy is stored transposed and permuted:
 *                     `WT[p*N + n]` = W[n, perm[p]] (column p of the permuted W is a contiguous row of WT)
 *   H [K, K]        → `H` (input, Σ x xᵀ up to any positive factor); damped, permuted and reversed → `Hrev`
 *   Hinv = UᵀU      → `U` (upper Cholesky factor of H⁻¹, row-major K×K, in permuted order)
 *   W1, Err1        → `W1` (float64 [B, N], block columns as rows), `Err1` ([B, N], i.e. Err1ᵀ)
 *   d = Hinv[i, i]  → `d`;  Q → `q` (integer levels) / `dequantized`;  Losses → `loss`
 *   perm, invperm   → `perm` (act-order: columns by descending diag(H), stable)
 *
 * Where it runs:
 *   - JavaScript: validation, dead columns, damping, permutation, group parameters (`findParams`).
 *   - WebAssembly SIMD (wasm/columns.wat; JavaScript on GGUF grids or with `wasm: false`, bit for bit the same): the
 *     column loop inside each sub-block of 32 columns (gptq-block.ts: quantize, err = (w − q)/d, OBS update of the
 *     sub-block's later columns) in float64.
 *   - onnxruntime Gemm: U (see linalg.ts: one blocked Cholesky + triangular inverse; plain JavaScript float64 for
 *     K ≤ 256), the update of a block's later columns after each sub-block, and the lazy-batch update of the tail
 *     after each block, W[:, i2:] −= Err1 · U[i1:i2, i2:]
 *     (Gemm transA=1, alpha=−1, beta=1, written into WT in place), in float32 by default like the PyTorch reference.
 *
 * Reference behaviours kept on purpose (so results match AutoGPTQ / GPTQModel / IST-DASLab):
 *   - groupSize −1: one set of per-row parameters from the original W, before dead columns are zeroed;
 *   - a group size that does not divide K: ⌈K/g⌉ groups, the last one shorter (W[:, p : K]), in both modes below;
 *   - dynamic groups: parameters from W[:, p : p+g] as it stands at the group start, which holds the lazy updates
 *     of earlier blocks but not the in-block updates of the current block (identical when g is a multiple of the
 *     block size, e.g. the usual g = blockSize = 128);
 *   - static groups: parameters of each natural group from the original W (dead columns zeroed), before permuting;
 *   - loss = Σ (w − q)² / d² / 2, in the units of the given H (the reference uses H = 2/n Σ x xᵀ).
 */
import { fail } from '../errors.js';
import type { SessionPool } from '../graph/session.js';
import { cholInverse, type LinalgOptions } from './linalg.js';
import { quantizeBlock, ROW_CHUNK } from './gptq-block.js';
import { ColumnWorkspace } from './wasm/columns.js';
import { lazyUpdate, type GemmArray } from './ort-gemm.js';
import type { BlockGrid } from '../formats/gguf/quants.js';
import {
  checkFinite,
  dequantize,
  findParams,
  groupCount,
  maxQ,
  resolveGroupSize,
  type GroupParams,
  type QuantConfig,
  type QuantizedLinear,
} from './quantizer.js';

/** Options of {@link gptqQuantize}. */
export interface GptqOptions extends QuantConfig {
  /** Dampening as a fraction of mean(diag(H)) (reference `percdamp`). Default 0.01. */
  damp?: number;
  /** Lazy-batch block size in columns. Default 128. */
  blockSize?: number;
  /** Process columns by descending diag(H) (reference `act_order` / `desc_act`). Default false. */
  actOrder?: boolean;
  /** Group parameters from the original weights in natural order, so g_idx stays k // g. Default false. */
  staticGroups?: boolean;
  /** Element type of the onnxruntime Gemms (lazy update and blocked factorization). Default 'float32'. */
  precision?: 'float32' | 'float64';
  /** Tuning of the Cholesky / inverse (thresholds between JavaScript and onnxruntime). */
  linalg?: Omit<LinalgOptions, 'precision' | 'keepL'>;
  /** Columns per JavaScript sub-block inside a lazy batch (the rest of the block is updated by Gemm). Default 32. */
  subBlock?: number;
  /** Share U between solves with the same Hessian (see GptqFactors). */
  factors?: GptqFactors;
  /**
   * Solve on this GGUF block grid (an empty grid of the layer's N × K) instead of the min-max grid of bits / groupSize
   * / sym: block parameters are fitted as llama.cpp's reference quantizer fits them, from the weights as they stand
   * at the block's start (with act-order: from the original weights, since GGUF has no g_idx). The result's
   * `q` are the grid's levels and `grid` the fitted grid; scales and zeros are empty.
   */
  grid?: BlockGrid;
  /** The column step in WebAssembly (default) or JavaScript; the same results bit for bit (tested). */
  wasm?: boolean;
}

/**
 * What a solve needs of its Hessian once factorized: U (the upper Cholesky factor of the damped, permuted H⁻¹), the
 * dampening it took, and diag(H) as given (dead columns, act-order, the dampening's mean). Computed from H and the
 * options alone ({@link gptqFactorize}), not from W: solves of one Hessian can share it, and a large solve can be cut
 * into row ranges that each start from it (rows of W are independent given U).
 */
export interface GptqFactorization {
  K: number;
  /** The options it was made with (damp, actOrder, precision, linalg), checked against the solve's. */
  key: string;
  U: GemmArray;
  damp: number;
  diag: Float64Array;
}

/**
 * Shares factorizations between solves with the same Hessian — an expert's gate and up, attention's q/k/v —
 * instead of factorizing again (the factorization is ~40% of a 768 × 2048 expert solve). Keyed by the Hessian array
 * itself, so H must not change while the cache is in use. Only the latest Hessian's factors are kept (a U of K = 2048
 * is 16 MB, and a layer has hundreds of expert Hessians): quantize the modules of one Hessian one after another.
 */
export class GptqFactors {
  private readonly byH = new Map<Float32Array, Map<string, Promise<GptqFactorization>>>();
  /** Factorizations computed (not reused), for tests and profiling. */
  computed = 0;

  get(H: Float32Array, key: string, make: () => Promise<GptqFactorization>): Promise<GptqFactorization> {
    let m = this.byH.get(H);
    if (!m) {
      this.byH.clear();
      this.byH.set(H, (m = new Map()));
    }
    let f = m.get(key);
    if (!f) {
      this.computed++;
      m.set(key, (f = make()));
      f.catch(() => m!.delete(key));
    }
    return f;
  }
}

/** Result of {@link gptqQuantize}. */
export interface GptqResult extends QuantizedLinear {
  /** Σ (w − q)² / d² / 2 over all weights (the reference's `Losses.sum()`). */
  loss: number;
  /** Dampening fraction actually used (larger than requested when H needed more to be positive definite). */
  damp: number;
  /**
   * tr(Δ·H·Δᵀ) = ‖(W − Ŵ)·X‖² for the given H (Δ = W − Ŵ, Ŵ = `dequantized`), from the solve's own errors instead
   * of a K×K product: GPTQ leaves W − Q = Err·U with U·H_d·Uᵀ = I for the damped H_d, so tr(Δ·H_d·Δᵀ) = Σ err²
   * = 2·loss, and H_d − H is diagonal (dampening, 1 on dead columns). Exact up to float32 rounding of the updates.
   */
  hessianError: number;
  /**
   * [Σ err², ‖Δz‖², Σ_dead ‖Δz[:, k]‖²] per ROW_CHUNK rows (Δz = W with dead columns zeroed − Ŵ): what `loss` and
   * `hessianError` are summed from, so that row ranges cut at multiples of ROW_CHUNK join into the same numbers
   * (joinedHessianError).
   */
  errorSums: Float64Array;
}

const DAMP_RETRIES = 3;

/**
 * Quantizes `W` [N, K] with GPTQ given the Hessian `H` [K, K] (row-major Float32Array, Σ x xᵀ at any positive
 * scale, e.g. the affinity-weighted AGQ Hessian) or its factorization ({@link gptqFactorize}, with the same options).
 * Returns the quantized Linear in natural column order.
 * Throws BAD_OPTION for bad bits / group / block sizes or shapes, NUMERIC for non-finite W or H, or when H stays
 * not positive definite after raising the dampening 10× three times.
 */
export async function gptqQuantize(
  W: Float32Array,
  N: number,
  K: number,
  H: Float32Array | GptqFactorization,
  opts: GptqOptions,
  pool: SessionPool,
): Promise<GptqResult> {
  // The column step runs in WebAssembly on the min-max grid (GGUF grids keep the JavaScript loop).
  const ws = opts.grid || opts.wasm === false ? null : ColumnWorkspace.acquire();
  try {
    return await solve({ W, N, K, H, opts, pool, ws });
  } finally {
    ws?.release();
  }
}

interface SolveArgs {
  W: Float32Array;
  N: number;
  K: number;
  H: Float32Array | GptqFactorization;
  opts: GptqOptions;
  pool: SessionPool;
  ws: ColumnWorkspace | null;
}

async function solve({ W, N, K, H, opts, pool, ws }: SolveArgs): Promise<GptqResult> {
  // ---- JavaScript: validation and set-up ----
  if (!Number.isInteger(N) || !Number.isInteger(K) || N <= 0 || K <= 0) throw fail('BAD_OPTION', `invalid layer shape N=${N}, K=${K}`);
  if (W.length !== N * K) throw fail('BAD_OPTION', `weight has ${W.length} values, expected N*K = ${N}*${K}`);
  checkHessianShape(H, K, opts);
  const grid = opts.grid;
  if (grid && (grid.N !== N || grid.K !== K)) throw fail('BAD_OPTION', `grid of ${grid.N}×${grid.K} for a ${N}×${K} layer`);
  const groupSize = grid ? grid.blockLen : resolveGroupSize(opts, K);
  const grouped = grid ? true : opts.groupSize !== -1;
  const blockSize = opts.blockSize ?? 128;
  if (!Number.isInteger(blockSize) || blockSize <= 0) throw fail('BAD_OPTION', `GPTQ block size ${blockSize} must be a positive integer`);
  const subBlock = opts.subBlock ?? 32;
  if (!Number.isInteger(subBlock) || subBlock <= 0) throw fail('BAD_OPTION', `GPTQ sub-block size ${subBlock} must be a positive integer`);
  let damp = checkDamp(opts);
  checkFinite(W, 'weight');
  const { bits, sym } = opts;
  const maxq = maxQ(bits);
  // ⌈K/g⌉ groups: when g does not divide K the last group is shorter (its parameters from its K mod g columns).
  const G = groupCount(K, groupSize);
  const staticGroups = grid ? Boolean(opts.actOrder) : grouped && (opts.staticGroups ?? false);
  const precision = opts.precision ?? 'float32';
  const T = precision === 'float64' ? Float64Array : Float32Array;

  const scales = new Float32Array(N * G);
  const zeros = new Uint8Array(N * G);
  const views = ws?.layout(Math.min(blockSize, K), N, G, T === Float32Array);
  // By group as well, for the column loop: one contiguous [N] row of scales / zeros per group.
  const byGroup: GroupParams[] = new Array<GroupParams>(G);
  const storeParams = (p: GroupParams, g: number): void => {
    byGroup[g] = p;
    views?.scales.set(p.scale, g * N);
    views?.zeros.set(p.zero, g * N);
    for (let n = 0; n < N; n++) {
      scales[n * G + g] = p.scale[n]!;
      zeros[n * G + g] = p.zero[n]!;
    }
  };
  // groupSize −1: parameters of the whole row, from W before dead columns are zeroed (reference order).
  if (!grouped) storeParams(findParams(W, N, K, 1, 0, K, bits, sym), 0);

  const { diag, dead, perm, mean } = columnOrder(H instanceof Float32Array ? hessianDiagonal(H, K) : H.diag, opts.actOrder ?? false);
  let Wz = W;
  if (dead.includes(1)) {
    Wz = W.slice();
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) if (dead[k]) Wz[n * K + k] = 0;
  }
  if (staticGroups) {
    for (let g = 0; g < G; g++) {
      if (grid) grid.fit(Wz, K, 1, g);
      else storeParams(findParams(Wz, N, K, 1, g * groupSize, Math.min((g + 1) * groupSize, K), bits, sym), g);
    }
  }

  // WT[p, n] = W[n, perm[p]]: column p of the permuted W as a contiguous row.
  const WT = new T(K * N);
  for (let n0 = 0; n0 < N; n0 += 64) {
    const n1 = Math.min(n0 + 64, N);
    for (let p = 0; p < K; p++) {
      const col = perm[p]!;
      for (let n = n0; n < n1; n++) WT[p * N + n] = Wz[n * K + col]!;
    }
  }

  // ---- U: JavaScript float64 (small K) or blocked with onnxruntime Gemm (linalg.ts) ----
  // It depends on H and these options only, so solves that share a Hessian can share it (GptqFactors).
  const f =
    H instanceof Float32Array
      ? await (opts.factors ? opts.factors.get(H, factorKey(opts), () => factorize(H, opts, pool, diag, perm, mean)) : factorize(H, opts, pool, diag, perm, mean))
      : H;
  const U = f.U;
  damp = f.damp;

  // ---- Column loop ----
  // Group of each position: dynamic p // g, static perm[p] // g (natural group), 0 without groups.
  const gPos = new Int32Array(K);
  for (let p = 0; p < K; p++) gPos[p] = !grouped ? 0 : staticGroups ? Math.floor(perm[p]! / groupSize) : Math.floor(p / groupSize);
  const qT = new Uint8Array(K * N); // levels by position, [K, N]
  const errSq = new Float64Array(Math.ceil(N / ROW_CHUNK));
  for (let i1 = 0; i1 < K; i1 += blockSize) {
    const i2 = Math.min(i1 + blockSize, K);
    const B = i2 - i1;
    // Dynamic groups starting in this block: parameters of W[:, p : p+g] from WT, which holds the lazy updates of
    // earlier blocks only (the reference reads W, not W1); WT does not change until the block ends.
    if (grouped && !staticGroups) {
      for (let p = Math.ceil(i1 / groupSize) * groupSize; p < i2; p += groupSize) {
        if (grid) grid.fit(WT, 1, N, p / groupSize);
        else storeParams(findParams(WT, N, 1, N, p, Math.min(p + groupSize, K), bits, sym), p / groupSize);
      }
    }
    let W1: Float64Array;
    let Err1: GemmArray;
    if (views) {
      W1 = views.W1.subarray(0, B * N);
      W1.set(WT.subarray(i1 * N, i2 * N));
      Err1 = views.Err1.subarray(0, B * N);
      // The block's square of U (above the diagonal: the column step's OBS updates), in float64.
      const Ub = views.U;
      const stride = Math.min(blockSize, K);
      for (let i = 0; i < B; i++) for (let j = i + 1, src = (i1 + i) * K + i1; j < B; j++) Ub[i * stride + j] = U[src + j]!;
    } else {
      W1 = new Float64Array(WT.subarray(i1 * N, i2 * N));
      Err1 = new T(B * N);
    }
    await quantizeBlock({ W1, Err1, qT, U, K, N, i1, B, gPos, groups: byGroup, maxq, grid, perm, errSq, ...(ws ? { ws } : {}) }, subBlock, pool);
    if (views) qT.set(views.q.subarray(0, B * N), i1 * N);
    if (i2 >= K) break;
    // onnxruntime Gemm, in place: W[:, i2:] −= Err1 · U[i1:i2, i2:], i.e. WT[i2:, :] −= U[i1:i2, i2:]ᵀ · Err1ᵀ.
    await lazyUpdate(pool, U, K, [i1, i2], [i2, K], Err1, N, WT.subarray(i2 * N));
  }

  // Unpermute (JavaScript): q[n, perm[p]] = qT[p, n]; g_idx[perm[p]] = group of position p.
  const q = new Uint8Array(N * K);
  const gIdx = new Int32Array(K);
  for (let p = 0; p < K; p++) gIdx[perm[p]!] = gPos[p]!;
  for (let n0 = 0; n0 < N; n0 += 64) {
    const n1 = Math.min(n0 + 64, N);
    for (let p = 0; p < K; p++) {
      const col = perm[p]!;
      for (let n = n0; n < n1; n++) q[n * K + col] = qT[p * N + n]!;
    }
  }

  const dequantized = grid ? grid.dequantize(q) : dequantize(N, K, q, scales, zeros, gIdx);
  // tr(Δ·H·Δᵀ) = tr(Δz·H_d·Δzᵀ) − λ‖Δz‖² − Σ_dead ‖Δz[:, k]‖² (Δz = Wz − Ŵ; H's dead rows and columns are zero), from
  // sums per ROW_CHUNK rows (`errorSums`).
  const errorSums = new Float64Array(3 * errSq.length);
  const anyDead = dead.includes(1);
  for (let c = 0; c < errSq.length; c++) {
    let dz2 = 0;
    let deadDz2 = 0;
    for (let n = c * ROW_CHUNK; n < Math.min((c + 1) * ROW_CHUNK, N); n++) {
      for (let i = n * K; i < (n + 1) * K; i++) dz2 += (Wz[i]! - dequantized[i]!) ** 2;
      if (anyDead) for (let k = 0; k < K; k++) if (dead[k]) deadDz2 += (Wz[n * K + k]! - dequantized[n * K + k]!) ** 2;
    }
    errorSums.set([errSq[c]!, dz2, deadDz2], 3 * c);
  }
  const loss = sumEvery(errorSums, 0) / 2;
  const hessianError = hessianErrorOf(errorSums, damp * mean);
  if (grid) {
    const none = new Float32Array(0);
    return { N, K, bits, groupSize, sym, q, scales: none, zeros: new Uint8Array(0), gIdx, dequantized, grid, loss, damp, hessianError, errorSums };
  }
  return { N, K, bits, groupSize, sym, q, scales, zeros, gIdx, dequantized, loss, damp, hessianError, errorSums };
}

function checkHessianShape(H: Float32Array | GptqFactorization, K: number, opts: GptqOptions): void {
  if (H instanceof Float32Array) {
    if (H.length !== K * K) throw fail('BAD_OPTION', `Hessian has ${H.length} values, expected K*K = ${K}*${K}`);
  } else {
    if (H.K !== K || H.U.length !== K * K) throw fail('BAD_OPTION', `factorization of K=${H.K} for a layer with K=${K}`);
    if (H.key !== factorKey(opts)) throw fail('BAD_OPTION', `factorization made with other options (${H.key}) than this solve's (${factorKey(opts)})`);
  }
}

function checkDamp(opts: GptqOptions): number {
  const damp = opts.damp ?? 0.01;
  if (!Number.isFinite(damp) || damp < 0) throw fail('BAD_OPTION', `--damp ${damp} must be a non-negative number`);
  return damp;
}

function hessianDiagonal(H: Float32Array, K: number): Float64Array {
  const d = new Float64Array(K);
  for (let i = 0; i < K; i++) d[i] = H[i * K + i]!;
  return d;
}

/** The options a factorization depends on besides H (GptqFactors' key). */
const factorKey = (opts: GptqOptions) => JSON.stringify([opts.damp ?? 0.01, opts.actOrder ?? false, opts.precision ?? 'float32', opts.linalg ?? null]);

/**
 * From diag(H) as given: dead columns (diag 0, then counted as 1: H[i,i] = 1, W[:, i] = 0), the act-order
 * permutation (stable, like torch.argsort(stable=True); position p holds original column perm[p]) and the mean the
 * dampening scales with.
 */
function columnOrder(given: Float64Array, actOrder: boolean): { diag: Float64Array; dead: Uint8Array; perm: Int32Array; mean: number } {
  const K = given.length;
  const diag = Float64Array.from(given);
  const dead = new Uint8Array(K);
  for (let i = 0; i < K; i++) {
    if (diag[i] === 0) {
      dead[i] = 1;
      diag[i] = 1;
    }
  }
  const perm = Int32Array.from({ length: K }, (_, i) => i);
  if (actOrder) perm.sort((a, b) => diag[b]! - diag[a]! || a - b);
  let mean = 0;
  for (let i = 0; i < K; i++) mean += diag[i]!;
  return { diag, dead, perm, mean: mean / K };
}

/**
 * U and the dampening it took for the Hessian `H` [K, K] and these options (damp, actOrder, precision, linalg):
 * what {@link gptqQuantize} computes first, for callers that cut one large solve into row ranges and factorize once.
 */
export async function gptqFactorize(H: Float32Array, K: number, opts: GptqOptions, pool: SessionPool): Promise<GptqFactorization> {
  checkHessianShape(H, K, opts);
  checkDamp(opts);
  const { diag, perm, mean } = columnOrder(hessianDiagonal(H, K), opts.actOrder ?? false);
  return factorize(H, opts, pool, diag, perm, mean);
}

async function factorize(H: Float32Array, opts: GptqOptions, pool: SessionPool, diag: Float64Array, perm: Int32Array, mean: number): Promise<GptqFactorization> {
  const K = diag.length;
  const precision = opts.precision ?? 'float32';
  const jsMaxN = opts.linalg?.jsMaxN ?? 256;
  // Damped, permuted H, stored reversed in both indices (see linalg.ts: U = J·chol(J·H·J)⁻¹·J).
  // H is checked here, once per factorization: solves sharing it (GptqFactors) share the check too.
  checkFinite(H, 'Hessian');
  const HT = K <= jsMaxN || precision === 'float64' ? Float64Array : Float32Array;
  const Hrev = new HT(K * K);
  const last = K - 1;
  if (opts.actOrder) {
    for (let p = 0; p < K; p++) {
      const src = perm[p]! * K;
      const dst = (last - p) * K + last;
      for (let r = 0; r < K; r++) Hrev[dst - r] = H[src + perm[r]!]!;
    }
  } else {
    // Natural order: reversing both indices of a row-major matrix is reversing its flat buffer.
    Hrev.set(H);
    Hrev.reverse();
  }
  for (let p = 0; p < K; p++) Hrev[(last - p) * (K + 1)] = diag[perm[p]!]!;
  // Dampening adds d · mean(diag H) (dead columns counted as 1) to the diagonal.
  let d = opts.damp ?? 0.01;
  let applied = 0;
  for (let attempt = 0; attempt <= DAMP_RETRIES; attempt++) {
    const add = d * mean - applied;
    for (let i = 0; i < K; i++) Hrev[i * K + i] += add;
    applied = d * mean;
    const res = await cholInverse(Hrev, K, pool, { ...opts.linalg, precision });
    if (res) return { K, key: factorKey(opts), U: res.M.reverse(), damp: d, diag: hessianDiagonal(H, K) };
    if (attempt < DAMP_RETRIES) d = d > 0 ? d * 10 : 0.01;
  }
  throw fail('NUMERIC', `the Hessian (K=${K}) is not positive definite even with dampening ${d} × mean(diag); ` +
    'the calibration inputs of this layer are degenerate (too few samples or constant features)');
}

/** Σ of every third value from `offset` (one of the errorSums columns). */
function sumEvery(sums: Float64Array, offset: number): number {
  let t = 0;
  for (let c = offset; c < sums.length; c += 3) t += sums[c]!;
  return t;
}

/** tr(Δ·H·Δᵀ) from errorSums: Σ err² − λ‖Δz‖² − Σ_dead ‖Δz[:, k]‖², λ = damp · mean(diag). */
function hessianErrorOf(sums: Float64Array, lambda: number): number {
  return Math.max(0, sumEvery(sums, 0) - lambda * sumEvery(sums, 1) - sumEvery(sums, 2));
}

/**
 * hessianError of one module solved as row ranges from the factorization `f` (ranges cut at multiples of ROW_CHUNK,
 * in order): bit for bit the module's hessianError had it been solved whole.
 */
export function joinedHessianError(parts: Array<Pick<GptqResult, 'errorSums'>>, f: GptqFactorization): number {
  const sums = new Float64Array(parts.reduce((a, p) => a + p.errorSums.length, 0));
  let at = 0;
  for (const p of parts) {
    sums.set(p.errorSums, at);
    at += p.errorSums.length;
  }
  return hessianErrorOf(sums, f.damp * columnOrder(f.diag, false).mean);
}
