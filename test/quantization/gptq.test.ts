import { afterAll, describe, expect, it } from 'vitest';
import { MoeQuantError } from '../../src/errors.js';
import { SessionPool } from '../../src/graph/session.js';
import { GptqFactors, gptqFactorize, gptqQuantize, type GptqOptions } from '../../src/quantization/gptq.js';
import { rtnQuantize } from '../../src/quantization/quantizer.js';
import { correlatedX, gram, levelDiff, outputError, randn, referenceGptq } from './helpers.js';

const pool = new SessionPool('cpu');
afterAll(() => pool.release());

function problem(N: number, K: number, seed: number, deadCols: number[] = []) {
  const m = 2 * K;
  const X = correlatedX(m, K, 0.7, seed);
  for (const c of deadCols) for (let r = 0; r < m; r++) X[r * K + c] = 0;
  return { W: randn(N * K, seed + 100, 0.05), H: gram(X, m, K) };
}

async function errorCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return e instanceof MoeQuantError ? `${e.code}: ${e.message}` : String(e);
  }
  return 'no error';
}

describe('gptqQuantize vs an unblocked float64 reference', () => {
  const N = 24;
  const K = 96;
  const { W, H } = problem(N, K, 1, [5, 40]);
  const cases: Array<[string, GptqOptions]> = [
    ['per-row (g=-1), asym', { bits: 4, groupSize: -1, sym: false }],
    ['g=16 < block 32 (group params lag inside a block), asym', { bits: 4, groupSize: 16, sym: false, blockSize: 32 }],
    ['g=48 > block 32 (groups start mid-block), sym', { bits: 4, groupSize: 48, sym: true, blockSize: 32 }],
    ['act-order, dynamic groups, 3 bits', { bits: 3, groupSize: 32, sym: false, blockSize: 32, actOrder: true }],
    ['act-order + static groups, sym', { bits: 4, groupSize: 32, sym: true, blockSize: 32, actOrder: true, staticGroups: true }],
    ['static groups without act-order, 2 bits', { bits: 2, groupSize: 48, sym: false, blockSize: 40, staticGroups: true }],
    ['8 bits, act-order, g=-1', { bits: 8, groupSize: -1, sym: false, blockSize: 20, actOrder: true }],
    ['sub-blocks of 5 in blocks of 32 (uneven), g=16', { bits: 4, groupSize: 16, sym: false, blockSize: 32, subBlock: 5 }],
    ['sub-blocks of 8, act-order, default block', { bits: 3, groupSize: 32, sym: false, actOrder: true, subBlock: 8 }],
    // K = 96 = 40 + 40 + 16: a shorter last group (its parameters from its 16 columns only)
    ['g=40 (last group 16, starts mid-block), asym', { bits: 4, groupSize: 40, sym: false, blockSize: 32 }],
    ['g=40, act-order, dynamic groups (the last 16 positions)', { bits: 4, groupSize: 40, sym: false, blockSize: 32, actOrder: true }],
    ['g=40, act-order + static groups (the last 16 columns), sym', { bits: 4, groupSize: 40, sym: true, blockSize: 32, actOrder: true, staticGroups: true }],
    ['g=64 (last group 32), 3 bits, default block', { bits: 3, groupSize: 64, sym: false }],
  ];
  for (const [name, opts] of cases) {
    it(`${name}: identical levels with float64 Gemm`, async () => {
      const ref = referenceGptq(W, N, K, H, opts);
      const res = await gptqQuantize(W, N, K, H, { ...opts, precision: 'float64' }, pool);
      expect(levelDiff(res.q, ref.q).count).toBe(0);
      expect(Array.from(res.gIdx)).toEqual(Array.from(ref.gIdx));
      expect(res.loss).toBeCloseTo(ref.loss, 8);
      expect(Math.abs(res.loss - ref.loss) / ref.loss).toBeLessThan(1e-9);
      expect(res.damp).toBe(0.01);
    });
  }

  it('hessianError is tr(ΔHΔᵀ) of the result, for every case above (dead columns, act-order, groups), float32 and float64', async () => {
    // The pipeline reports rel_error from it instead of a K×K product; a solver whose updates drifted from
    // W − Q = Err·U would fail here.
    for (const [, opts] of cases) {
      for (const precision of ['float32', 'float64'] as const) {
        const res = await gptqQuantize(W, N, K, H, { ...opts, precision }, pool);
        const direct = outputError(W, res.dequantized, H, N, K);
        expect(Math.abs(res.hessianError / direct - 1)).toBeLessThan(precision === 'float64' ? 1e-9 : 1e-4);
      }
    }
  });

  it('float32 Gemm (default) agrees up to rare rounding flips', async () => {
    const opts: GptqOptions = { bits: 4, groupSize: 32, sym: false, blockSize: 32, actOrder: true };
    const ref = referenceGptq(W, N, K, H, opts);
    const res = await gptqQuantize(W, N, K, H, opts, pool);
    const d = levelDiff(res.q, ref.q);
    expect(d.count).toBeLessThan(N * K * 0.005);
    expect(d.max).toBeLessThanOrEqual(1);
    expect(Math.abs(res.loss - ref.loss) / ref.loss).toBeLessThan(1e-3);
  });

  it('g_idx: act-order without static groups follows the permutation, with static groups stays k // g', async () => {
    const dyn = await gptqQuantize(W, N, K, H, { bits: 4, groupSize: 32, sym: false, actOrder: true }, pool);
    const stat = await gptqQuantize(W, N, K, H, { bits: 4, groupSize: 32, sym: false, actOrder: true, staticGroups: true }, pool);
    const diag = Array.from({ length: K }, (_, i) => H[i * K + i]!).map((v) => (v === 0 ? 1 : v));
    const perm = Array.from({ length: K }, (_, i) => i).sort((a, b) => diag[b]! - diag[a]! || a - b);
    for (let p = 0; p < K; p++) expect(dyn.gIdx[perm[p]!]).toBe(Math.floor(p / 32));
    expect(Array.from(stat.gIdx)).toEqual(Array.from({ length: K }, (_, k) => Math.floor(k / 32)));
    // dequantized is consistent with q, scales, zeros and g_idx
    for (const r of [dyn, stat]) {
      for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) {
        const g = n * 3 + r.gIdx[k]!;
        expect(r.dequantized[n * K + k]).toBe(Math.fround((r.q[n * K + k]! - r.zeros[g]!) * r.scales[g]!));
      }
    }
  });

  it('dead columns are quantized as zeros', async () => {
    const res = await gptqQuantize(W, N, K, H, { bits: 4, groupSize: 32, sym: false }, pool);
    for (let n = 0; n < N; n++) for (const c of [5, 40]) expect(res.dequantized[n * K + c]).toBe(0);
  });
});

describe('gptqQuantize on a larger layer (blocked onnxruntime Cholesky path)', () => {
  it('K=384, N=64: close to the reference and better than RTN on correlated inputs', async () => {
    const N = 64;
    const K = 384;
    const { W, H } = problem(N, K, 9);
    const opts: GptqOptions = { bits: 4, groupSize: 128, sym: false };
    const res = await gptqQuantize(W, N, K, H, { ...opts, linalg: { baseBlock: 128 } }, pool);
    const ref = referenceGptq(W, N, K, H, opts);
    const d = levelDiff(res.q, ref.q);
    expect(d.count).toBeLessThan(N * K * 0.005);
    expect(Math.abs(res.loss - ref.loss) / ref.loss).toBeLessThan(1e-3);
    const rtn = rtnQuantize(W, N, K, opts);
    const eG = outputError(W, res.dequantized, H, N, K);
    const eR = outputError(W, rtn.dequantized, H, N, K);
    expect(eG).toBeLessThan(0.7 * eR);
  });
});

describe('gptqQuantize: scale invariance, dampening and errors', () => {
  const N = 8;
  const K = 48;
  const { W, H } = problem(N, K, 3);

  it('multiplying H by a constant changes only the loss', async () => {
    const opts: GptqOptions = { bits: 4, groupSize: 16, sym: false, precision: 'float64' };
    const a = await gptqQuantize(W, N, K, H, opts, pool);
    const b = await gptqQuantize(W, N, K, H.map((v) => v * 4), opts, pool);
    expect(levelDiff(a.q, b.q).count).toBe(0);
    expect(b.loss / a.loss).toBeCloseTo(4, 6);
  });

  it('raises the dampening 10x when H is not positive definite, then fails NUMERIC', async () => {
    // rank-deficient H with damp 0 → retried with 0.01
    const m = K / 2;
    const X = correlatedX(m, K, 0.5, 4);
    const low = gram(X, m, K);
    const r = await gptqQuantize(W, N, K, low, { bits: 4, groupSize: 16, sym: false, damp: 0 }, pool);
    expect(r.damp).toBe(0.01);
    const neg = H.slice();
    for (let i = 0; i < K; i++) neg[i * K + i] = -1;
    expect(await errorCode(gptqQuantize(W, N, K, neg, { bits: 4, groupSize: 16, sym: false }, pool))).toMatch(/^NUMERIC: .*not positive definite/);
  });

  it('rejects bad options and non-finite inputs', async () => {
    const base = { bits: 4, groupSize: 16, sym: false };
    expect(await errorCode(gptqQuantize(W, N, K, H, { ...base, bits: 6 }, pool))).toMatch(/^BAD_OPTION/);
    expect(await errorCode(gptqQuantize(W, N, K, H, { ...base, groupSize: 0 }, pool))).toMatch(/^BAD_OPTION: --group-size 0 is invalid/);
    expect(await errorCode(gptqQuantize(W, N, K, H, { ...base, blockSize: 0 }, pool))).toMatch(/^BAD_OPTION/);
    expect(await errorCode(gptqQuantize(W, N, K, H.subarray(1), base, pool))).toMatch(/^BAD_OPTION/);
    const nanH = H.slice();
    nanH[3] = NaN;
    expect(await errorCode(gptqQuantize(W, N, K, nanH, base, pool))).toMatch(/^NUMERIC: Hessian/);
    const infW = W.slice();
    infW[0] = Infinity;
    expect(await errorCode(gptqQuantize(infW, N, K, H, base, pool))).toMatch(/^NUMERIC: weight/);
  });
});

describe('GptqFactors: solves from one Hessian share its factorization', () => {
  it('gate and up from the same H: one factorization, results bit-identical to separate solves; other options or an evicted H factorize again', async () => {
    const K = 384; // the blocked onnxruntime path
    const { W: gate, H } = problem(48, K, 11);
    const up = randn(48 * K, 12, 0.05);
    const opts: GptqOptions = { bits: 4, groupSize: 128, sym: false };
    const factors = new GptqFactors();
    const shared = [await gptqQuantize(gate, 48, K, H, { ...opts, factors }, pool), await gptqQuantize(up, 48, K, H, { ...opts, factors }, pool)];
    expect(factors.computed).toBe(1);
    const alone = [await gptqQuantize(gate, 48, K, H, opts, pool), await gptqQuantize(up, 48, K, H, opts, pool)];
    shared.forEach((r, i) => {
      expect(Array.from(r.q)).toEqual(Array.from(alone[i]!.q));
      expect(r.loss).toBe(alone[i]!.loss);
    });
    await gptqQuantize(gate, 48, K, H, { ...opts, damp: 0.1, factors }, pool);
    expect(factors.computed).toBe(2);
    // a new Hessian evicts the old one's factors (memory stays one Hessian's)
    await gptqQuantize(gate, 48, K, H.slice(), { ...opts, factors }, pool);
    await gptqQuantize(up, 48, K, H, { ...opts, factors }, pool);
    expect(factors.computed).toBe(4);
  });

  it('the dampening raised for a not positive definite H is shared too', async () => {
    const K = 40;
    const H = new Float32Array(K * K);
    for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) H[i * K + j] = i === j ? (i === 3 ? -1 : 1) : 0; // one negative pivot
    const factors = new GptqFactors();
    const a = await gptqQuantize(randn(8 * K, 1), 8, K, H, { bits: 4, groupSize: -1, sym: false, damp: 0.5, factors }, pool);
    const b = await gptqQuantize(randn(8 * K, 2), 8, K, H, { bits: 4, groupSize: -1, sym: false, damp: 0.5, factors }, pool);
    expect(a.damp).toBeGreaterThan(0.5);
    expect(b.damp).toBe(a.damp);
    expect(factors.computed).toBe(1);
  });
});

describe('gptqFactorize: a solve from a factorization made beforehand', () => {
  it('gives the same bits as the solve from H, with dead columns, act-order and a raised dampening; other options are refused', async () => {
    const K = 300;
    const { W, H } = problem(40, K, 21, [7, 150]);
    H[9 * K + 9] = -H[9 * K + 9]!; // a negative pivot: needs more dampening
    const opts: GptqOptions = { bits: 4, groupSize: 64, sym: false, actOrder: true, staticGroups: true, damp: 0.01 };
    const f = await gptqFactorize(H, K, opts, pool);
    const fromH = await gptqQuantize(W, 40, K, H, opts, pool);
    const fromF = await gptqQuantize(W, 40, K, f, opts, pool);
    expect(fromF.damp).toBe(fromH.damp);
    expect(fromF.damp).toBeGreaterThan(0.01);
    for (const k of ['q', 'scales', 'zeros', 'gIdx', 'dequantized'] as const) expect(Buffer.from(fromF[k].buffer).equals(Buffer.from(fromH[k].buffer))).toBe(true);
    expect(fromF.loss).toBe(fromH.loss);
    expect(fromF.hessianError).toBe(fromH.hessianError);
    expect(await errorCode(gptqQuantize(W, 40, K, f, { ...opts, actOrder: false }, pool))).toMatch(/^BAD_OPTION: factorization made with other options/);
    expect(await errorCode(gptqQuantize(W.subarray(0, 40 * 200), 40, 200, f, opts, pool))).toMatch(/^BAD_OPTION: factorization of K=300/);
  });
});

describe('gptqQuantize with a group size that does not divide K (shorter last group)', () => {
  // DeepSeek-V2-Lite's dense down_proj: K = 10944 = 85·128 + 64; scaled down: K = 320 = 128 + 128 + 64.
  const N = 16;
  const K = 320;

  it('a diagonal Hessian gives exactly RTN (no error feedback): 128, 128, 64 with the last from its 64 columns', async () => {
    const W = randn(N * K, 31, 0.05);
    for (let k = 256; k < K; k++) W[2 * K + k] = W[2 * K + k]! * 20;
    const H = new Float32Array(K * K);
    const diag = randn(K, 32);
    for (let i = 0; i < K; i++) H[i * K + i] = 0.5 + Math.abs(diag[i]!);
    for (const opts of [
      { bits: 4, groupSize: 128, sym: false },
      { bits: 3, groupSize: 128, sym: true },
      { bits: 4, groupSize: 128, sym: false, actOrder: true, staticGroups: true },
      { bits: 4, groupSize: 128, sym: false, blockSize: 96 },
    ] as GptqOptions[]) {
      const res = await gptqQuantize(W, N, K, H, opts, pool);
      const rtn = rtnQuantize(W, N, K, opts);
      expect(res.scales.length).toBe(N * 3);
      expect(Array.from(res.q), JSON.stringify(opts)).toEqual(Array.from(rtn.q));
      expect(Array.from(res.scales)).toEqual(Array.from(rtn.scales));
      expect(Array.from(res.zeros)).toEqual(Array.from(rtn.zeros));
      expect(Array.from(res.gIdx)).toEqual(Array.from({ length: K }, (_, k) => Math.floor(k / 128)));
      expect(Array.from(res.dequantized)).toEqual(Array.from(rtn.dequantized));
    }
  });

  it('correlated inputs: the float64 reference levels and g_idx, with and without act-order', async () => {
    const { W, H } = problem(N, K, 33, [7, 300]);
    for (const opts of [
      { bits: 4, groupSize: 128, sym: false },
      { bits: 4, groupSize: 128, sym: false, actOrder: true },
      { bits: 4, groupSize: 128, sym: true, actOrder: true, staticGroups: true },
    ] as GptqOptions[]) {
      const ref = referenceGptq(W, N, K, H, opts);
      const res = await gptqQuantize(W, N, K, H, { ...opts, precision: 'float64' }, pool);
      expect(levelDiff(res.q, ref.q).count, JSON.stringify(opts)).toBe(0);
      expect(Array.from(res.gIdx)).toEqual(Array.from(ref.gIdx));
      expect(Math.abs(res.loss - ref.loss) / ref.loss).toBeLessThan(1e-9);
      expect(Math.max(...res.gIdx)).toBe(2);
    }
  });
});

describe('gptqQuantize: the WebAssembly column step', () => {
  // Odd N (a scalar last element), N over one 128-row chunk, several sub-blocks and a short last block, dead columns.
  const cases: Array<[string, number, number, GptqOptions]> = [
    ['groups of 32', 37, 200, { bits: 4, groupSize: 32, sym: false }],
    ['act-order, static groups, float64', 130, 256, { bits: 3, groupSize: 64, sym: true, actOrder: true, staticGroups: true, precision: 'float64' }],
    ['act-order, dynamic groups', 160, 300, { bits: 4, groupSize: 128, sym: false, actOrder: true }],
    ['one group per row, 8 bits', 64, 96, { bits: 8, groupSize: -1, sym: false }],
  ];
  for (const [name, N, K, opts] of cases) {
    it(`${name}: bit for bit the JavaScript step's levels, weights, loss and hessianError`, async () => {
      const { W, H } = problem(N, K, N + K, [3, K - 2]);
      const js = await gptqQuantize(W, N, K, H, { ...opts, wasm: false }, pool);
      const wasm = await gptqQuantize(W, N, K, H, opts, pool);
      expect(Buffer.from(wasm.q).equals(Buffer.from(js.q))).toBe(true);
      expect(Buffer.from(wasm.dequantized.buffer).equals(Buffer.from(js.dequantized.buffer))).toBe(true);
      expect(wasm.loss).toBe(js.loss);
      expect(wasm.hessianError).toBe(js.hessianError);
      expect(Array.from(wasm.gIdx)).toEqual(Array.from(js.gIdx));
    });
  }

  it('solves in flight together in one thread each get their own workspace', async () => {
    const a = problem(48, 256, 7);
    const b = problem(40, 192, 8);
    const opts: GptqOptions = { bits: 4, groupSize: 64, sym: false };
    const [x, y] = await Promise.all([gptqQuantize(a.W, 48, 256, a.H, opts, pool), gptqQuantize(b.W, 40, 192, b.H, opts, pool)]);
    expect(Buffer.from(x.q).equals(Buffer.from((await gptqQuantize(a.W, 48, 256, a.H, { ...opts, wasm: false }, pool)).q))).toBe(true);
    expect(Buffer.from(y.q).equals(Buffer.from((await gptqQuantize(b.W, 40, 192, b.H, { ...opts, wasm: false }, pool)).q))).toBe(true);
  });
});
