/**
 * Group-wise min-max weight quantizer, as GPTQ's `Quantizer.find_params` / `quantize` (IST-DASLab gptq `quant.py`,
 * `mse=False`), plus round-to-nearest (RTN) quantization of a whole Linear.
 *
 * Paper / reference notation → code:
 *   W [N, K] (PyTorch [out, in])     → `W` (row-major Float32Array)
 *   maxq = 2^bits − 1                → `maxq`
 *   scale, zero (per row and group)  → `scales[n*G + g]`, `zeros[n*G + g]`
 *   Q = scale · (q − zero)           → `dequantized`; the integer levels q → `q`
 *
 * Everything here runs in JavaScript (one pass over the weights, no onnxruntime).
 *
 * One deliberate difference from the reference: every scale is rounded to float16 right after it is computed
 * (GPTQ checkpoints store scales as fp16) and the zero point and q are computed with that rounded scale, so
 * `dequantized` equals bit for bit what a loader reconstructs from the packed checkpoint.
 * Rounding is round-half-to-even (torch.round) on float32 quotients, like the float32 PyTorch reference.
 */
import { toFloat32, float32ToF16 } from '../checkpoint/dtypes.js';
import { fail } from '../errors.js';
import type { BlockGrid } from '../formats/gguf/quants.js';

/** Quantization grid: bit width, group size along K, symmetric or asymmetric. */
export interface QuantConfig {
  /** Bits per weight: 2, 3, 4 or 8. */
  bits: number;
  /** Input channels per group; −1 = one group per row (the whole K). */
  groupSize: number;
  /** Symmetric grid (zero = 2^(bits−1)) instead of min-max asymmetric. */
  sym: boolean;
}

/** A quantized Linear in natural (unpermuted) column order. */
export interface QuantizedLinear {
  /** Output features (rows of W). */
  N: number;
  /** Input features (columns of W). */
  K: number;
  bits: number;
  /** Actual group size (K when the config said −1). */
  groupSize: number;
  sym: boolean;
  /** Integer levels 0..maxq, row-major [N, K] in natural column order. */
  q: Uint8Array;
  /**
   * Scales [N, G] (row-major, G = ⌈K / groupSize⌉: when groupSize does not divide K the last group is shorter, as
   * GPTQ checkpoints allow); every value is exactly representable in float16.
   */
  scales: Float32Array;
  /** Integer zero points [N, G], 0..maxq. */
  zeros: Uint8Array;
  /** Group of each input column [K] (k // groupSize unless act-order without static groups). */
  gIdx: Int32Array;
  /** Dequantized weights [N, K] = (q − zeros[g]) · scales[g] with g = gIdx[k]. */
  dequantized: Float32Array;
  /** Set when solved on a GGUF block grid: `q` are its levels (scales and zeros are then empty). */
  grid?: BlockGrid;
  /** Solved on a GGUF block grid (pipeline/solve.ts): the tensor's bytes in that block type, for the writer. */
  packed?: Uint8Array;
}

/** Per-row parameters of one group. */
export interface GroupParams {
  /** fp16-exact scale per row. */
  scale: Float32Array;
  /** Integer zero point per row. */
  zero: Uint8Array;
}

const BITS = [2, 3, 4, 8];
const F16_MIN_SUBNORMAL = 2 ** -24;

/** Largest integer level for `bits` (2^bits − 1). */
export function maxQ(bits: number): number {
  return 2 ** bits - 1;
}

/**
 * Checks `cfg` against a layer with `K` input features and returns the actual group size (K for −1).
 * Throws BAD_OPTION for an unsupported bit width or a group size that is not a positive integer (or −1).
 * A group size that does not divide K is fine: the last group is shorter (K mod g columns), which is the layout
 * GPTQ loaders expect for group_size g (⌈K/g⌉ groups, g_idx = k // g) and what the reference GPTQ computes (the
 * parameters of the group starting at column k from W[:, k : k+g], a shorter slice at the end).
 */
export function resolveGroupSize(cfg: QuantConfig, K: number): number {
  if (!BITS.includes(cfg.bits)) throw fail('BAD_OPTION', `--bits ${cfg.bits} is not supported (use 2, 3, 4 or 8)`);
  const g = cfg.groupSize;
  if (g === -1) return K;
  if (!Number.isInteger(g) || g <= 0) {
    throw fail('BAD_OPTION', `--group-size ${g} is invalid (use a positive integer or -1 for one group per row)`);
  }
  // K smaller than the group (e.g. MLA kv_b_proj, K = kv_lora_rank): one group per row. That is exactly the GPTQ
  // layout a loader expects for group_size g (ceil(K/g) = 1 group, g_idx = k // g = 0), so no special casing.
  if (K < g) return K;
  return g;
}

/** Groups per row for `groupSize` (as resolved by {@link resolveGroupSize}): ⌈K / groupSize⌉. */
export function groupCount(K: number, groupSize: number): number {
  return Math.ceil(K / groupSize);
}

/** Throws NUMERIC when `W` holds a NaN or infinity. `what` names the tensor in the message. */
export function checkFinite(W: ArrayLike<number>, what: string): void {
  // x·0 is NaN exactly for NaN and ±Inf: one branch-free pass, then a second only to name the first bad index.
  // Four independent sums so the adds do not wait on each other.
  let p0 = 0;
  let p1 = 0;
  let p2 = 0;
  let p3 = 0;
  const n4 = W.length - (W.length % 4);
  for (let i = 0; i < n4; i += 4) {
    p0 += W[i]! * 0;
    p1 += W[i + 1]! * 0;
    p2 += W[i + 2]! * 0;
    p3 += W[i + 3]! * 0;
  }
  for (let i = n4; i < W.length; i++) p0 += W[i]! * 0;
  if (p0 + p1 + p2 + p3 === 0) return;
  for (let i = 0; i < W.length; i++) {
    if (!Number.isFinite(W[i]!)) throw fail('NUMERIC', `${what} has a non-finite value (${W[i]}) at flat index ${i}`);
  }
}

/** torch.round: nearest integer, ties to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Integer level of `x` on the grid (scale, zero): clamp(round(x / scale) + zero, 0, maxq), division in float32. */
export function quantizeValue(x: number, scale: number, zero: number, maxq: number): number {
  const v = roundHalfEven(Math.fround(x / scale)) + zero;
  return v < 0 ? 0 : v > maxq ? maxq : v;
}

/**
 * `Quantizer.find_params` for the columns [k0, k1) of an N-row matrix whose element (n, k) sits at
 * `src[n*rowStride + k*colStride]` (so W [N,K] is (K, 1) and Wᵀ [K,N] is (1, N)).
 * asym: xmin = min(min, 0), xmax = max(max, 0), scale = (xmax − xmin)/maxq, zero = round(−xmin/scale);
 * sym: xmax = max(|xmin|, xmax), xmin = −xmax when xmin < 0, zero = (maxq+1)/2 (the reference keeps xmin = 0 for
 * an all-non-negative row, so its scale is xmax/maxq); rows with xmin = xmax = 0 use [−1, 1].
 * The scale is rounded to float16 (a zero that underflows becomes the smallest fp16 subnormal) before the zero point.
 */
export function findParams(
  src: ArrayLike<number>,
  N: number,
  rowStride: number,
  colStride: number,
  k0: number,
  k1: number,
  bits: number,
  sym: boolean,
): GroupParams {
  const maxq = maxQ(bits);
  const raw = new Float32Array(N);
  const xmins = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let mn = 0;
    let mx = 0;
    for (let k = k0, o = n * rowStride + k0 * colStride; k < k1; k++, o += colStride) {
      const x = src[o]!;
      if (x < mn) mn = x;
      if (x > mx) mx = x;
    }
    mn = Math.fround(mn);
    mx = Math.fround(mx);
    if (sym) {
      mx = Math.max(-mn, mx);
      if (mn < 0) mn = -mx;
    }
    if (mn === 0 && mx === 0) {
      mn = -1;
      mx = 1;
    }
    xmins[n] = mn;
    raw[n] = Math.fround(Math.fround(mx - mn) / maxq);
  }
  const scale = toFloat32('F16', new Uint8Array(float32ToF16(raw).buffer));
  const zero = new Uint8Array(N);
  const symZero = (maxq + 1) / 2;
  for (let n = 0; n < N; n++) {
    if (!Number.isFinite(scale[n]!)) {
      throw fail('NUMERIC', `weight range of row ${n} (columns ${k0}..${k1 - 1}) overflows the float16 scale`);
    }
    if (scale[n] === 0) scale[n] = F16_MIN_SUBNORMAL;
    zero[n] = sym ? symZero : Math.min(maxq, roundHalfEven(Math.fround(-xmins[n]! / scale[n]!)));
  }
  return { scale, zero };
}

/** Group index of each column for a monotonic layout: k // groupSize. */
export function naturalGroups(K: number, groupSize: number): Int32Array {
  const gIdx = new Int32Array(K);
  for (let k = 0; k < K; k++) gIdx[k] = Math.floor(k / groupSize);
  return gIdx;
}

/** Fills `dequantized` [N,K] = (q − zero[g]) · scale[g] from q, scales, zeros and gIdx (float32, exact). */
export function dequantize(N: number, K: number, q: Uint8Array, scales: Float32Array, zeros: Uint8Array, gIdx: Int32Array): Float32Array {
  const G = scales.length / N;
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    const prow = n * G;
    for (let k = 0; k < K; k++) {
      const g = prow + gIdx[k]!;
      out[row + k] = (q[row + k]! - zeros[g]!) * scales[g]!;
    }
  }
  return out;
}

/**
 * Round-to-nearest quantization of `W` [N, K] (PyTorch [out, in], row-major) with per-row, per-group min-max
 * parameters (⌈K/g⌉ groups; a last group of K mod g columns gets parameters from exactly those columns). Throws BAD_OPTION for bad bits / group size and NUMERIC for non-finite weights.
 */
export function rtnQuantize(W: Float32Array, N: number, K: number, cfg: QuantConfig): QuantizedLinear {
  if (W.length !== N * K) throw fail('BAD_OPTION', `weight has ${W.length} values, expected N*K = ${N}*${K}`);
  const groupSize = resolveGroupSize(cfg, K);
  checkFinite(W, 'weight');
  const G = groupCount(K, groupSize);
  const maxq = maxQ(cfg.bits);
  const scales = new Float32Array(N * G);
  const zeros = new Uint8Array(N * G);
  const q = new Uint8Array(N * K);
  for (let g = 0; g < G; g++) {
    const k0 = g * groupSize;
    const k1 = Math.min(k0 + groupSize, K); // the last group may be shorter
    const p = findParams(W, N, K, 1, k0, k1, cfg.bits, cfg.sym);
    for (let n = 0; n < N; n++) {
      const s = p.scale[n]!;
      const z = p.zero[n]!;
      scales[n * G + g] = s;
      zeros[n * G + g] = z;
      for (let k = k0, o = n * K + k0; k < k1; k++, o++) q[o] = quantizeValue(W[o]!, s, z, maxq);
    }
  }
  const gIdx = naturalGroups(K, groupSize);
  return { N, K, bits: cfg.bits, groupSize, sym: cfg.sym, q, scales, zeros, gIdx, dequantized: dequantize(N, K, q, scales, zeros, gIdx) };
}
