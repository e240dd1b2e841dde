import { afterAll, describe, expect, it } from 'vitest';
import { SessionPool } from '../../src/graph/session.js';
import { cholInverse, choleskyJs, hinvUpper, invertLowerJs } from '../../src/quantization/linalg.js';
import { flushSubnormals, gemm } from '../../src/quantization/ort-gemm.js';
import { correlatedX, referenceHinvUpper } from './helpers.js';

const pool = new SessionPool('cpu');
afterAll(() => pool.release());

/** Damped Hessian of correlated inputs, like GPTQ sees it. */
async function hessian(K: number, seed: number): Promise<Float32Array> {
  const m = K + Math.ceil(K / 2);
  const X = correlatedX(m, K, 0.8, seed);
  const H = await gemm(pool, { a: X, aDims: [m, K], b: X, bDims: [m, K], transA: true });
  let mean = 0;
  for (let i = 0; i < K; i++) mean += H[i * K + i]! / K;
  for (let i = 0; i < K; i++) H[i * K + i] += 0.01 * mean;
  return H;
}

function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return err / scale;
}

describe('JavaScript kernels', () => {
  it('choleskyJs and invertLowerJs', () => {
    const A = Float64Array.of(4, 2, 2, 2, 5, 3, 2, 3, 6);
    const L = choleskyJs(A, 3)!;
    expect(Array.from(L).map((v) => +v.toFixed(12))).toEqual([2, 0, 0, 1, 2, 0, 1, 1, 2]);
    const M = invertLowerJs(L, 3);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) {
      let s = 0;
      for (let k = 0; k < 3; k++) s += L[i * 3 + k]! * M[k * 3 + j]!;
      expect(s).toBeCloseTo(i === j ? 1 : 0, 14);
    }
    expect(choleskyJs(Float64Array.of(1, 2, 2, 1), 2)).toBeNull();
    expect(choleskyJs(Float64Array.of(NaN), 1)).toBeNull();
  });
});

describe('ort gemm', () => {
  it('honours transposes, alpha/beta and array views with an offset', async () => {
    const a = Float32Array.of(99, 1, 2, 3, 4, 5, 6).subarray(1); // [2,3]
    const b = Float32Array.of(1, 0, 0, 1, 1, 1); // [3,2]
    const c = Float32Array.of(10, 10, 10, 10);
    expect(Array.from(await gemm(pool, { a, aDims: [2, 3], b, bDims: [3, 2] }))).toEqual([4, 5, 10, 11]);
    expect(Array.from(await gemm(pool, { a, aDims: [2, 3], b, bDims: [3, 2], c, alpha: -1, beta: 1 }))).toEqual([6, 5, 0, -1]);
    const bt = Float64Array.of(1, 0, 1, 0, 1, 1); // [2,3] → transB
    expect(Array.from(await gemm(pool, { a: Float64Array.from(a), aDims: [2, 3], b: bt, bDims: [2, 3], transB: true }))).toEqual([4, 5, 10, 11]);
  });
});

describe('flushSubnormals', () => {
  it('zeroes float32 subnormals only, leaves float64 alone', () => {
    const a = Float32Array.of(1e-40, -1e-42, 2e-38, -3, 0, 1e-30);
    expect(Array.from(flushSubnormals(a))).toEqual([0, 0, Math.fround(2e-38), -3, 0, Math.fround(1e-30)]);
    expect(Array.from(flushSubnormals(Float64Array.of(1e-40)))).toEqual([1e-40]);
  });
});

describe('blocked Cholesky / inverse on onnxruntime vs plain float64', () => {
  for (const K of [512, 1024]) {
    it(`K=${K}: L and L⁻¹ match choleskyJs / invertLowerJs`, async () => {
      const H = await hessian(K, K);
      const L = choleskyJs(H, K)!;
      const M = invertLowerJs(L, K);
      const f32 = (await cholInverse(H, K, pool, { jsMaxN: 0, baseBlock: 128, keepL: true }))!;
      expect(f32.M).toBeInstanceOf(Float32Array);
      expect(maxRel(f32.L!, L)).toBeLessThan(1e-5);
      expect(maxRel(f32.M, M)).toBeLessThan(2e-5);
      if (K === 512) {
        const f64 = (await cholInverse(H, K, pool, { jsMaxN: 0, baseBlock: 128, keepL: true, precision: 'float64' }))!;
        expect(maxRel(f64.L!, L)).toBeLessThan(1e-12);
        expect(maxRel(f64.M, M)).toBeLessThan(1e-12);
      }
    });
  }

  it('odd sizes and small base blocks (float64 Gemm) match to rounding', async () => {
    for (const [K, base] of [[200, 16], [97, 24], [130, 128]] as const) {
      const H = await hessian(K, K + 1);
      const ref = invertLowerJs(choleskyJs(H, K)!, K);
      const got = (await cholInverse(Float64Array.from(H), K, pool, { jsMaxN: 0, baseBlock: base, precision: 'float64' }))!;
      expect(maxRel(got.M, ref)).toBeLessThan(1e-11);
    }
  });

  it('reports a matrix that is not positive definite (small and blocked paths)', async () => {
    const K = 300;
    const H = await hessian(K, 5);
    H[299 * K + 299] = -1;
    expect(await cholInverse(H, K, pool)).toBeNull();
    expect(await cholInverse(H, K, pool, { jsMaxN: 0, baseBlock: 64 })).toBeNull();
  });
});

describe('hinvUpper', () => {
  for (const [K, jsMaxN] of [[96, 256], [300, 0]] as const) {
    it(`equals the reference chol(inverse(H), upper) (K=${K}, ${jsMaxN ? 'JavaScript' : 'onnxruntime'})`, async () => {
      const H = await hessian(K, 7);
      const U = (await hinvUpper(H, K, pool, { jsMaxN, baseBlock: 64 }))!;
      const ref = referenceHinvUpper(Float64Array.from(H), K);
      expect(maxRel(U, ref)).toBeLessThan(jsMaxN ? 1e-10 : 2e-5);
      for (let i = 1; i < K; i++) expect(U[i * K + i - 1]).toBe(0); // upper triangular
    });
  }
});
