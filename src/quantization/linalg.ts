/**
 * Dense symmetric positive-definite kernels for GPTQ: Cholesky, triangular inverse, and the upper Cholesky factor
 * of H⁻¹ that GPTQ's column loop reads (the reference computes `chol(cholesky_inverse(chol(H)), upper=True)`).
 *
 * Notation → code: H (damped Hessian) → `H`; H = L·Lᵀ → `L` (lower); L⁻¹ → `M`; Hinv = H⁻¹ = UᵀU → `U` (upper).
 *
 * The upper factor is obtained with one Cholesky and one triangular inverse instead of three factorizations:
 * with J the reversal permutation, J·H·J = L·Lᵀ gives H = R·Rᵀ for the upper R = J·L·J, hence
 * H⁻¹ = R⁻ᵀ·R⁻¹ and U = R⁻¹ = J·L⁻¹·J (unique, positive diagonal). Reversing a row-major K×K matrix in both
 * indices is reversing its flat buffer.
 *
 * Where it runs:
 *   - n ≤ `jsMaxN` (default 256): everything in JavaScript, float64.
 *   - larger n: a recursive blocked algorithm. Diagonal blocks of ≤ `baseBlock` rows are factored and inverted in
 *     JavaScript (float64); the panel L21 = A21·M11ᵀ, the trailing update S = A22 − L21·L21ᵀ
 *     (Gemm alpha=−1, beta=1, transB=1) and the off-diagonal inverse block M21 = −M22·(L21·M11) run as
 *     onnxruntime Gemm on dynamic-shape sessions, in float32 by default (PyTorch's reference is float32 too) or
 *     float64. Float32 operands are flushed of subnormals (JavaScript) because they slow MLAS down ~30×.
 */
import type { SessionPool } from '../graph/session.js';
import { flushSubnormals, gemm, type GemmArray } from './ort-gemm.js';

/** Lower Cholesky factor (float64, row-major n×n) of the lower triangle of `A`, or null when A is not positive definite. */
export function choleskyJs(A: ArrayLike<number>, n: number): Float64Array | null {
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    for (let j = 0; j <= i; j++) {
      const rj = j * n;
      let s = A[ri + j]!;
      for (let k = 0; k < j; k++) s -= L[ri + k]! * L[rj + k]!;
      if (i === j) {
        if (!(s > 0)) return null; // also catches NaN
        L[ri + i] = Math.sqrt(s);
      } else {
        L[ri + j] = s / L[rj + j]!;
      }
    }
  }
  return L;
}

/** Inverse of a lower-triangular matrix (float64, row-major), by forward substitution row by row. */
export function invertLowerJs(L: ArrayLike<number>, n: number): Float64Array {
  const M = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    // Row i of M·L = e_i: M[i,:]·L[i,i] = e_i − Σ_{k<i} L[i,k]·M[k,:], where M[k,:] is zero beyond column k.
    for (let k = 0; k < i; k++) {
      const l = L[ri + k]!;
      if (l === 0) continue;
      const rk = k * n;
      for (let j = 0; j <= k; j++) M[ri + j] -= l * M[rk + j]!;
    }
    M[ri + i] = 1;
    const d = 1 / L[ri + i]!;
    for (let j = 0; j <= i; j++) M[ri + j] *= d;
  }
  return M;
}

/** Options of {@link cholInverse} and {@link hinvUpper}. */
export interface LinalgOptions {
  /** Largest n handled entirely in JavaScript (float64). Default 256. */
  jsMaxN?: number;
  /** Largest diagonal block factored in JavaScript in the blocked path. Default 128. */
  baseBlock?: number;
  /** Element type of the onnxruntime Gemms. Default 'float32'. */
  precision?: 'float32' | 'float64';
  /** Also return L (the blocked path assembles it; memory for one more n×n matrix). */
  keepL?: boolean;
}

/** Result of {@link cholInverse}: M = L⁻¹ (and L when asked), row-major n×n, lower triangular. */
export interface CholInverse {
  M: GemmArray;
  L?: GemmArray;
}

type Ctor = Float32ArrayConstructor | Float64ArrayConstructor;

/** Copy of the r×c block of the row-major n-column matrix `A` starting at (r0, c0). */
function block(A: GemmArray, n: number, r0: number, c0: number, r: number, c: number, T: Ctor): GemmArray {
  const out = new T(r * c);
  for (let i = 0; i < r; i++) out.set(A.subarray((r0 + i) * n + c0, (r0 + i) * n + c0 + c), i * c);
  return out;
}

/** Writes the r×c matrix `B` into `A` (n columns) at (r0, c0). */
function put(A: GemmArray, n: number, r0: number, c0: number, B: GemmArray, r: number, c: number): void {
  for (let i = 0; i < r; i++) A.set(B.subarray(i * c, (i + 1) * c), (r0 + i) * n + c0);
}

async function recurse(
  pool: SessionPool,
  A: GemmArray,
  n: number,
  base: number,
  T: Ctor,
  keepL: boolean,
): Promise<CholInverse | null> {
  if (n <= base) {
    // JavaScript, float64: factor and invert the diagonal block.
    const L = choleskyJs(A, n);
    if (!L) return null;
    return { M: flushSubnormals(T.from(invertLowerJs(L, n))), L: keepL ? T.from(L) : undefined };
  }
  // Split near the middle, on a multiple of 64 when that is possible, so blocks stay aligned.
  let n1 = Math.round(n / 2 / 64) * 64;
  if (n1 <= 0 || n1 >= n) n1 = Math.floor(n / 2);
  const n2 = n - n1;
  const top = await recurse(pool, block(A, n, 0, 0, n1, n1, T), n1, base, T, keepL);
  if (!top) return null;
  const A21 = block(A, n, n1, 0, n2, n1, T);
  const A22 = block(A, n, n1, n1, n2, n2, T);
  // onnxruntime: panel L21 = A21·L11⁻ᵀ = A21·M11ᵀ.
  const L21 = flushSubnormals(await gemm(pool, { a: A21, aDims: [n2, n1], b: top.M, bDims: [n1, n1], transB: true }));
  // onnxruntime: trailing update S = A22 − L21·L21ᵀ.
  const S = flushSubnormals(await gemm(pool, { a: L21, aDims: [n2, n1], b: L21, bDims: [n2, n1], c: A22, transB: true, alpha: -1, beta: 1 }));
  const bottom = await recurse(pool, S, n2, base, T, keepL);
  if (!bottom) return null;
  // onnxruntime: M21 = −L22⁻¹·L21·L11⁻¹ = −M22·(L21·M11).
  const LM = flushSubnormals(await gemm(pool, { a: L21, aDims: [n2, n1], b: top.M, bDims: [n1, n1] }));
  const M21 = flushSubnormals(await gemm(pool, { a: bottom.M, aDims: [n2, n2], b: LM, bDims: [n2, n1], alpha: -1 }));
  const M = new T(n * n);
  put(M, n, 0, 0, top.M, n1, n1);
  put(M, n, n1, 0, M21, n2, n1);
  put(M, n, n1, n1, bottom.M, n2, n2);
  let L: GemmArray | undefined;
  if (keepL) {
    L = new T(n * n);
    put(L, n, 0, 0, top.L!, n1, n1);
    put(L, n, n1, 0, L21, n2, n1);
    put(L, n, n1, n1, bottom.L!, n2, n2);
  }
  return { M, L };
}

/**
 * Cholesky factor L (A = L·Lᵀ) and its inverse M = L⁻¹ of the symmetric positive-definite `A` (row-major n×n;
 * only the lower triangle is read). Returns null when A is not (numerically) positive definite.
 * Small n runs in JavaScript float64; large n uses the blocked algorithm with onnxruntime Gemm (see file header).
 */
export async function cholInverse(A: GemmArray, n: number, pool: SessionPool, opts: LinalgOptions = {}): Promise<CholInverse | null> {
  const jsMaxN = opts.jsMaxN ?? 256;
  if (n <= jsMaxN) {
    const L = choleskyJs(A, n);
    if (!L) return null;
    return { M: invertLowerJs(L, n), L: opts.keepL ? L : undefined };
  }
  const T: Ctor = opts.precision === 'float64' ? Float64Array : Float32Array;
  const src = A instanceof T ? A : T.from(A);
  return recurse(pool, src, n, Math.max(16, opts.baseBlock ?? 128), T, opts.keepL ?? false);
}

/**
 * The upper-triangular U with UᵀU = H⁻¹ (what GPTQ calls Hinv after its final `cholesky(upper=True)`), for the
 * symmetric positive-definite, already damped `H` (row-major K×K, not modified). Null when H is not positive definite.
 */
export async function hinvUpper(H: GemmArray, K: number, pool: SessionPool, opts: LinalgOptions = {}): Promise<GemmArray | null> {
  // J·H·J: reverse the flat buffer (JavaScript copy).
  const reversed = H.slice().reverse();
  const res = await cholInverse(reversed, K, pool, { ...opts, keepL: false });
  if (!res) return null;
  // U = J·M·J: reverse again, in place.
  return res.M.reverse();
}
