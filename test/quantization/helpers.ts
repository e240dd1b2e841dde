/**
 * Test helpers: seeded random data, correlated calibration inputs, and a straightforward float64 implementation of
 * the reference GPTQ `fasterquant` (unblocked: every column's error is applied to all later columns at once;
 * H⁻¹'s upper factor computed literally as chol(inverse(H)), independent of src/quantization/linalg.ts).
 */
import { MoeQuantError } from '../../src/errors.js';
import { findParams, quantizeValue, type GroupParams } from '../../src/quantization/quantizer.js';

/** Deterministic PRNG in [0, 1) — the one calibration sampling uses. */
import { randn, seededRandom as rng } from '../../src/calibration/samples.js';
export { randn, rng };

/** X [m, K] with neighbouring columns correlated (AR(1) with coefficient rho) and varied column scales. */
export function correlatedX(m: number, K: number, rho: number, seed: number): Float32Array {
  const X = randn(m * K, seed);
  const colScale = randn(K, seed + 1).map((v) => 0.3 + Math.abs(v));
  for (let r = 0; r < m; r++) {
    for (let c = 1; c < K; c++) X[r * K + c] = rho * X[r * K + c - 1]! + Math.sqrt(1 - rho * rho) * X[r * K + c]!;
    for (let c = 0; c < K; c++) X[r * K + c] *= colScale[c]!;
  }
  return X;
}

/** H = Xᵀ X (float64 sums, returned as float32). */
export function gram(X: Float32Array, m: number, K: number): Float32Array {
  const H = new Float64Array(K * K);
  for (let r = 0; r < m; r++) {
    const row = r * K;
    for (let i = 0; i < K; i++) {
      const xi = X[row + i]!;
      if (xi === 0) continue;
      for (let j = 0; j < K; j++) H[i * K + j] += xi * X[row + j]!;
    }
  }
  return Float32Array.from(H);
}

/** tr((W − Q) H (W − Q)ᵀ): the layer-output squared error GPTQ minimises. */
export function outputError(W: Float32Array, Q: Float32Array, H: Float32Array, N: number, K: number): number {
  let total = 0;
  const d = new Float64Array(K);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) d[k] = W[n * K + k]! - Q[n * K + k]!;
    for (let i = 0; i < K; i++) {
      let s = 0;
      for (let j = 0; j < K; j++) s += H[i * K + j]! * d[j]!;
      total += d[i]! * s;
    }
  }
  return total;
}

function naiveChol(A: Float64Array, n: number): Float64Array {
  const L = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let s = A[j * n + j]!;
    for (let k = 0; k < j; k++) s -= L[j * n + k]! ** 2;
    if (!(s > 0)) throw new Error('not PD');
    L[j * n + j] = Math.sqrt(s);
    for (let i = j + 1; i < n; i++) {
      let t = A[i * n + j]!;
      for (let k = 0; k < j; k++) t -= L[i * n + k]! * L[j * n + k]!;
      L[i * n + j] = t / L[j * n + j]!;
    }
  }
  return L;
}

/** Upper U with UᵀU = H⁻¹, computed as the reference does: chol(H) → H⁻¹ → upper Cholesky of H⁻¹. */
export function referenceHinvUpper(H: Float64Array, n: number): Float64Array {
  const L = naiveChol(H, n);
  // Linv by column-wise forward substitution, then Hinv = Linvᵀ Linv.
  const Li = new Float64Array(n * n);
  for (let c = 0; c < n; c++) {
    for (let i = c; i < n; i++) {
      let s = i === c ? 1 : 0;
      for (let k = c; k < i; k++) s -= L[i * n + k]! * Li[k * n + c]!;
      Li[i * n + c] = s / L[i * n + i]!;
    }
  }
  const Hinv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let k = Math.max(i, j); k < n; k++) s += Li[k * n + i]! * Li[k * n + j]!;
    Hinv[i * n + j] = s;
  }
  const Lh = naiveChol(Hinv, n);
  const U = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) U[i * n + j] = Lh[j * n + i]!;
  return U;
}

export interface RefOptions {
  bits: number;
  groupSize: number;
  sym: boolean;
  damp?: number;
  blockSize?: number;
  actOrder?: boolean;
  staticGroups?: boolean;
}

/** Reference GPTQ in float64, unblocked. Returns integer levels [N, K] (natural order), loss and g_idx. */
export function referenceGptq(W: Float32Array, N: number, K: number, H: Float32Array, o: RefOptions) {
  const maxq = 2 ** o.bits - 1;
  const grouped = o.groupSize !== -1;
  const gs = grouped ? o.groupSize : K;
  const B = o.blockSize ?? 128;
  let current: GroupParams | null = grouped ? null : findParams(W, N, K, 1, 0, K, o.bits, o.sym);
  const Hd = Float64Array.from(H);
  const Wd = Float64Array.from(W);
  for (let i = 0; i < K; i++) {
    if (Hd[i * K + i] === 0) {
      Hd[i * K + i] = 1;
      for (let n = 0; n < N; n++) Wd[n * K + i] = 0;
    }
  }
  const statics: GroupParams[] = [];
  // ⌈K/g⌉ groups; the last one may be shorter (W[:, g·gs : K]), as in the reference's slicing.
  if (grouped && o.staticGroups) for (let g = 0; g < Math.ceil(K / gs); g++) statics.push(findParams(Wd, N, K, 1, g * gs, Math.min((g + 1) * gs, K), o.bits, o.sym));
  const perm = Array.from({ length: K }, (_, i) => i);
  if (o.actOrder) perm.sort((a, b) => Hd[b * K + b]! - Hd[a * K + a]! || a - b);
  const Wp = new Float64Array(N * K);
  const Hp = new Float64Array(K * K);
  for (let p = 0; p < K; p++) {
    for (let n = 0; n < N; n++) Wp[n * K + p] = Wd[n * K + perm[p]!]!;
    for (let r = 0; r < K; r++) Hp[p * K + r] = Hd[perm[p]! * K + perm[r]!]!;
  }
  let mean = 0;
  for (let i = 0; i < K; i++) mean += Hp[i * K + i]!;
  for (let i = 0; i < K; i++) Hp[i * K + i] += ((o.damp ?? 0.01) * mean) / K;
  const U = referenceHinvUpper(Hp, K);
  const q = new Uint8Array(N * K);
  const gIdx = new Int32Array(K);
  let loss = 0;
  let snap = Wp.slice();
  for (let p = 0; p < K; p++) {
    if (p % B === 0) snap = Wp.slice(); // the reference reads group parameters from W, which lags inside a block
    let g = 0;
    if (grouped) {
      if (o.staticGroups) {
        g = Math.floor(perm[p]! / gs);
        current = statics[g]!;
      } else {
        g = Math.floor(p / gs);
        if (p % gs === 0) current = findParams(snap, N, K, 1, p, Math.min(p + gs, K), o.bits, o.sym);
      }
    }
    gIdx[perm[p]!] = g;
    const d = U[p * K + p]!;
    for (let n = 0; n < N; n++) {
      const w = Wp[n * K + p]!;
      const s = current!.scale[n]!;
      const z = current!.zero[n]!;
      const level = quantizeValue(w, s, z, maxq);
      q[n * K + perm[p]!] = level;
      const e = (w - (level - z) * s) / d;
      loss += (e * e) / 2;
      for (let j = p + 1; j < K; j++) Wp[n * K + j] -= e * U[p * K + j]!;
    }
  }
  return { q, loss, gIdx };
}

/** Number of positions where two level arrays differ, and the largest difference. */
export function levelDiff(a: Uint8Array, b: Uint8Array): { count: number; max: number } {
  let count = 0;
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (d) count++;
    if (d > max) max = d;
  }
  return { count, max };
}

/** What `fn` throws, as "CODE: message" for our errors ('no error' when it returns). */
export function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return e instanceof MoeQuantError ? `${e.code}: ${e.message}` : String(e);
  }
  return 'no error';
}
