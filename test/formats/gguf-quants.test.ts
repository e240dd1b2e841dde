/** GGUF block types: the reference grids (bytes as the Python gguf package writes them), packing, the grid solve. */
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/checkpoint/safetensors.js';
import { BlockGrid, dequantizeRows, rtnGrid, type QuantType } from '../../src/formats/gguf/quants.js';
import { SessionPool } from '../../src/graph/session.js';
import { gptqQuantize } from '../../src/quantization/gptq.js';
import { correlatedX, gram, outputError as hError, randn } from '../quantization/helpers.js';

const pool = new SessionPool('cpu');
afterAll(() => pool.release());
const ALL: QuantType[] = ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q4_K', 'Q5_K', 'Q6_K'];

/** How many values differ (−0 and +0 are the same weight; NaN is the same as NaN). */
function differ(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let n = a.length === b.length ? 0 : Infinity;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) n++;
  return n;
}

describe('GGUF block types', () => {
  it('round-to-nearest writes the bytes of the Python gguf package (llama.cpp reference rounding): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0', () => {
    const f = SafetensorsFile.open(path.resolve(__dirname, '../fixtures/gguf/quant-reference.safetensors'));
    const x = f.readFloat32('x');
    const [N, K] = f.tensors.get('x')!.shape as [number, number];
    for (const type of ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0'] as const) {
      const want = f.readBytes(type);
      const r = rtnGrid(x, N, K, type);
      const got = r.grid.pack(r.levels);
      let diff = 0;
      for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) diff++;
      expect(`${type}: ${diff} bytes differ`).toBe(`${type}: 0 bytes differ`);
    }
    f.close();
  });

  it('packed bytes dequantize (as llama.cpp does) to exactly the values the solver used, for every type', () => {
    const N = 6;
    const K = 512;
    const W = randn(N * K, 21, 0.05);
    for (let k = 0; k < 32; k++) W[k] = 0; // a zero block
    for (const type of ALL) {
      const r = rtnGrid(W, N, K, type);
      const back = dequantizeRows(type, r.grid.pack(r.levels), N, K);
      expect(differ(back, r.dequantized)).toBe(0);
    }
  });

  it('K-quant grids get better with bits, and beat the 32-blocks of the same bits', () => {
    const N = 8;
    const K = 1024;
    const W = randn(N * K, 22, 0.05);
    const err = (t: QuantType) => {
      const r = rtnGrid(W, N, K, t);
      let s = 0;
      for (let i = 0; i < W.length; i++) s += (W[i]! - r.dequantized[i]!) ** 2;
      return s;
    };
    const e = Object.fromEntries(ALL.map((t) => [t, err(t)]));
    expect(e['Q6_K']).toBeLessThan(e['Q5_K']!);
    expect(e['Q5_K']).toBeLessThan(e['Q4_K']!);
    expect(e['Q4_K']).toBeLessThan(e['Q4_0']!);
    expect(e['Q5_K']).toBeLessThan(e['Q5_0']!);
  });

  for (const type of ['Q4_0', 'Q4_1', 'Q8_0', 'Q4_K', 'Q6_K'] as const) {
    it(`${type}: GPTQ on the grid with a diagonal Hessian is round-to-nearest; with a correlated one it lowers the Hessian-weighted error`, async () => {
      const N = 8;
      const K = 256;
      const W = randn(N * K, 23, 0.05);
      const diag = new Float32Array(K * K);
      for (let i = 0; i < K; i++) diag[i * K + i] = 1 + (i % 7);
      const rtn = rtnGrid(W, N, K, type);
      const g1 = await gptqQuantize(W, N, K, diag, { bits: 4, groupSize: 32, sym: false, grid: new BlockGrid(type, N, K) }, pool);
      expect(Array.from(g1.q)).toEqual(Array.from(rtn.levels));
      expect(Array.from(g1.grid!.pack(g1.q))).toEqual(Array.from(rtn.grid.pack(rtn.levels)));
      const H = gram(correlatedX(4 * K, K, 0.7, 24), 4 * K, K);
      const g2 = await gptqQuantize(W, N, K, H, { bits: 4, groupSize: 32, sym: false, grid: new BlockGrid(type, N, K) }, pool);
      expect(hError(W, g2.dequantized, H, N, K)).toBeLessThan(0.9 * hError(W, rtn.dequantized, H, N, K));
      // The solve's own tr(ΔHΔᵀ) holds on a block grid too (quant-report's rel_error uses it).
      expect(Math.abs(g2.hessianError / hError(W, g2.dequantized, H, N, K) - 1)).toBeLessThan(1e-4);
      const back = dequantizeRows(type, g2.grid!.pack(g2.q), N, K);
      expect(differ(back, g2.dequantized)).toBe(0);
      const g3 = await gptqQuantize(W, N, K, H, { bits: 4, groupSize: 32, sym: false, actOrder: true, grid: new BlockGrid(type, N, K) }, pool);
      expect(hError(W, g3.dequantized, H, N, K)).toBeLessThan(hError(W, rtn.dequantized, H, N, K));
    });
  }

  it('the K-quant scale searches in WebAssembly give exactly the JavaScript reference: Q4_K, Q5_K, Q6_K', () => {
    // Rows of varied scale and awkward sub-blocks: zeros, constants, one sign, ties of the level grid, values whose
    // block max is below make_qx_quants' 1e-15 cut, subnormals, a huge range, −0 and lone outliers.
    const K = 1024;
    const scales = [1e-3, 0.02, 0.05, 1, 30, 1e4];
    const N = 40;
    const W = randn(N * K, 31, 1);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) W[n * K + k]! *= scales[n % scales.length]!;
    const sub = (n: number, s: number, len: number, f: (i: number) => number) => {
      for (let i = 0; i < len; i++) W[n * K + s * len + i] = f(i);
    };
    sub(0, 0, 32, () => 0);
    sub(0, 1, 32, () => 0.5);
    sub(0, 2, 32, (i) => -1 + (2 * i) / 31);
    sub(0, 3, 32, (i) => Math.abs(W[3 * K + i]!));
    sub(0, 4, 32, (i) => -Math.abs(W[4 * K + i]!));
    sub(0, 5, 32, (i) => (i % 2 ? -0 : 0));
    sub(1, 0, 256, (i) => (i % 3) * 1e-17);
    sub(1, 1, 256, (i) => (i - 128) * 1e-41);
    sub(2, 0, 256, (i) => (i === 7 ? 3e37 : i === 9 ? -3e37 : 1));
    sub(2, 1, 256, (i) => (i === 0 ? 100 : 0.001 * i));
    sub(3, 0, 256, (i) => Math.round((i % 32) / 2) * 0.125);
    for (const type of ['Q4_K', 'Q5_K', 'Q6_K'] as const) {
      const a = rtnGrid(W, N, K, type);
      const b = rtnGrid(W, N, K, type, false);
      const fields = (g: BlockGrid) => [g.d, g.m, g.sc, g.mq, g.step, g.offset] as const;
      fields(a.grid).forEach((f, i) => expect(`${type} field ${i}: ${differ(f, fields(b.grid)[i]!)} differ`).toBe(`${type} field ${i}: 0 differ`));
      expect(differ(a.levels, b.levels)).toBe(0);
      expect(Buffer.from(a.grid.pack(a.levels)).equals(Buffer.from(b.grid.pack(b.levels)))).toBe(true);
    }
  });

  it('rows that do not fill a block are refused', () => {
    expect(() => new BlockGrid('Q4_K', 2, 128)).toThrow(/multiple of 256/);
    expect(() => new BlockGrid('Q4_0', 2, 48)).toThrow(/multiple of 32/);
  });
});
