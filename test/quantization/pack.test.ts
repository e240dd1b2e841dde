import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { attr, GraphBuilder, OnnxType } from '../../src/graph/builder.js';
import { SessionPool } from '../../src/graph/session.js';
import { gptqQuantize } from '../../src/quantization/gptq.js';
import { packGptq, toMatMulNBits, unpackGptq } from '../../src/quantization/pack.js';
import { rtnQuantize, type QuantizedLinear } from '../../src/quantization/quantizer.js';
import { code, correlatedX, gram, randn } from './helpers.js';

const pool = new SessionPool('cpu');
afterAll(() => pool.release());

function bitsOf(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

/** Weights where some groups are all positive (asym zero 0) and some all negative (asym zero maxq). */
function skewed(N: number, K: number, g: number, seed: number): Float32Array {
  const W = randn(N * K, seed, 0.1);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const group = Math.floor(k / g);
      if ((n + group) % 3 === 0) W[n * K + k] = Math.abs(W[n * K + k]!) + 0.01;
      if ((n + group) % 3 === 1) W[n * K + k] = -Math.abs(W[n * K + k]!) - 0.01;
    }
  }
  return W;
}

function roundTrip(ql: QuantizedLinear, format: 'gptq' | 'gptq_v2') {
  const packed = packGptq(ql, format);
  const un = unpackGptq(packed, { N: ql.N, K: ql.K, bits: ql.bits, format });
  expect(un.scales.length).toBe(ql.scales.length);
  expect(Array.from(un.q)).toEqual(Array.from(ql.q));
  expect(Array.from(un.zeros)).toEqual(Array.from(ql.zeros));
  expect(Array.from(un.gIdx)).toEqual(Array.from(ql.gIdx));
  expect(Array.from(bitsOf(un.scales))).toEqual(Array.from(bitsOf(ql.scales)));
  expect(Array.from(bitsOf(un.dequantized))).toEqual(Array.from(bitsOf(ql.dequantized)));
  return packed;
}

describe('GPTQ packing', () => {
  const N = 16;
  const K = 64;

  for (const format of ['gptq', 'gptq_v2'] as const) {
    it(`${format}: 4-bit asym round trip is exact, including zero points 0 and 15`, () => {
      const ql = rtnQuantize(skewed(N, K, 16, 1), N, K, { bits: 4, groupSize: 16, sym: false });
      expect(ql.zeros.includes(0)).toBe(true);
      expect(ql.zeros.includes(15)).toBe(true);
      const packed = roundTrip(ql, format);
      expect(packed.qweight.length).toBe((K / 8) * N);
      expect(packed.qzeros.length).toBe(4 * (N / 8));
      expect(packed.v1ZeroOverflow).toBe(format === 'gptq' ? ql.zeros.filter((z) => z === 0).length : 0);
    });

    it(`${format}: 8-bit round trip is exact`, () => {
      const ql = rtnQuantize(skewed(N, K, 32, 2), N, K, { bits: 8, groupSize: 32, sym: false });
      roundTrip(ql, format);
    });

    it(`${format}: 2- and 3-bit round trips are exact (3 bits: 32 values in 3 words)`, () => {
      const q2 = rtnQuantize(skewed(N, K, 16, 11), N, K, { bits: 2, groupSize: 16, sym: false });
      const p2 = roundTrip(q2, format);
      expect([p2.qweightRows, p2.qzerosCols]).toEqual([K / 16, N / 16]);
      const q3 = rtnQuantize(skewed(32, 96, 32, 12), 32, 96, { bits: 3, groupSize: 32, sym: false });
      expect(q3.zeros.includes(0) && q3.zeros.includes(7)).toBe(true);
      const p3 = roundTrip(q3, format);
      expect([p3.qweightRows, p3.qzerosCols]).toEqual([9, 3]);
    });
  }

  it('bit layout: little-nibble-first along K, v1 sym zeros are 0x77777777', () => {
    const ql = rtnQuantize(randn(8 * 8, 3), 8, 8, { bits: 4, groupSize: -1, sym: true });
    ql.q.set([1, 2, 3, 4, 5, 6, 7, 8]); // row 0
    const p = packGptq(ql, 'gptq');
    expect(p.qweight[0]! >>> 0).toBe(0x87654321);
    expect(Array.from(p.qzeros).map((w) => w >>> 0)).toEqual([0x77777777]);
    expect(Array.from(packGptq(ql, 'gptq_v2').qzeros).map((w) => w >>> 0)).toEqual([0x88888888]);
  });

  it("3-bit layout is AutoGPTQ's pack loop (10 values per word, the 11th and 22nd split across words)", () => {
    const Kp = 64;
    const ql = rtnQuantize(randn(32 * Kp, 13), 32, Kp, { bits: 3, groupSize: 32, sym: false });
    // AutoGPTQ qlinear_cuda_old.pack, bits == 3, written out literally for one column.
    const ref = (col: number[]): number[] => {
      const words = new Array<number>((col.length / 32) * 3).fill(0);
      let i = 0;
      let row = 0;
      while (row < words.length) {
        for (let j = i; j < i + 10; j++) words[row] |= col[j]! << (3 * (j - i));
        i += 10;
        words[row] |= col[i]! << 30;
        row++;
        words[row] |= (col[i]! >> 2) & 1;
        i++;
        for (let j = i; j < i + 10; j++) words[row] |= col[j]! << (3 * (j - i) + 1);
        i += 10;
        words[row] |= col[i]! << 31;
        row++;
        words[row] |= (col[i]! >> 1) & 0x3;
        i++;
        for (let j = i; j < i + 10; j++) words[row] |= col[j]! << (3 * (j - i) + 2);
        i += 10;
        row++;
      }
      return words.map((w) => w | 0);
    };
    const p = packGptq(ql, 'gptq_v2');
    for (const n of [0, 5, 31]) {
      const col = Array.from({ length: Kp }, (_, k) => ql.q[n * Kp + k]!);
      expect(Array.from({ length: p.qweightRows }, (_, r) => p.qweight[r * 32 + n]!)).toEqual(ref(col));
    }
    const zrow = Array.from({ length: 32 }, (_, n) => ql.zeros[n * 2 + 1]!);
    expect(Array.from(p.qzeros.subarray(3, 6))).toEqual(ref(zrow));
  });

  it('act-order g_idx survives packing; unpack without g_idx assumes k // g', async () => {
    const m = 2 * K;
    const H = gram(correlatedX(m, K, 0.6, 5), m, K);
    const ql = await gptqQuantize(randn(N * K, 6, 0.05), N, K, H, { bits: 4, groupSize: 16, sym: false, actOrder: true }, pool);
    roundTrip(ql, 'gptq_v2');
    const p = packGptq(rtnQuantize(randn(N * K, 7), N, K, { bits: 4, groupSize: 16, sym: true }), 'gptq');
    const un = unpackGptq({ qweight: p.qweight, qzeros: p.qzeros, scales: p.scales }, { N, K, bits: 4, format: 'gptq' });
    expect(un.groupSize).toBe(16);
    expect(un.gIdx[17]).toBe(1);
  });

  it('errors: 5 bits cannot be written, shapes must pack, inconsistent tensors are BAD_CHECKPOINT', () => {
    const q3 = rtnQuantize(randn(N * K, 8), N, K, { bits: 3, groupSize: 16, sym: false });
    expect(code(() => packGptq({ ...q3, bits: 5 }, 'gptq'))).toBe('BAD_OPTION: the GPTQ writer packs 2, 3, 4 or 8 bits (got 5)');
    expect(code(() => packGptq(q3, 'gptq'))).toMatch(/^UNSUPPORTED: .*N=16.*multiple of 32 for 3-bit/);
    const narrow = rtnQuantize(randn(4 * K, 9), 4, K, { bits: 4, groupSize: 16, sym: false });
    expect(code(() => packGptq(narrow, 'gptq'))).toMatch(/^UNSUPPORTED: .*N=4/);
    const short = rtnQuantize(randn(N * 12, 9), N, 12, { bits: 4, groupSize: -1, sym: false });
    expect(code(() => packGptq(short, 'gptq'))).toMatch(/^UNSUPPORTED: .*K=12/);
    const p = packGptq(rtnQuantize(randn(N * K, 10), N, K, { bits: 4, groupSize: 16, sym: false }), 'gptq');
    expect(code(() => unpackGptq({ ...p, qweight: p.qweight.subarray(1) }, { N, K, bits: 4, format: 'gptq' }))).toMatch(/^BAD_CHECKPOINT/);
    expect(code(() => unpackGptq({ ...p, gIdx: new Int32Array(K).fill(9) }, { N, K, bits: 4, format: 'gptq' }))).toMatch(/^BAD_CHECKPOINT/);
  });
});

describe('GPTQ packing with a shorter last group (K = 320, g = 128: groups of 128, 128, 64)', () => {
  const N = 32;
  const K = 320;
  for (const format of ['gptq', 'gptq_v2'] as const) {
    for (const bits of [2, 3, 4, 8]) {
      it(`${format}, ${bits} bits: ⌈K/g⌉ = 3 rows of scales and qzeros, pack → unpack exact`, () => {
        const ql = rtnQuantize(skewed(N, K, 64, 40 + bits), N, K, { bits, groupSize: 128, sym: false });
        const p = roundTrip(ql, format);
        expect(p.scales.length).toBe(3 * N);
        expect(p.qzeros.length).toBe(3 * p.qzerosCols);
        expect(p.qweightRows).toBe((K * bits) / 32);
        // without g_idx, the config's group size says where groups start
        const un = unpackGptq({ qweight: p.qweight, qzeros: p.qzeros, scales: p.scales }, { N, K, bits, format, groupSize: 128 });
        expect(un.groupSize).toBe(128);
        expect(Array.from(un.gIdx)).toEqual(Array.from(ql.gIdx));
        expect(Array.from(bitsOf(un.dequantized))).toEqual(Array.from(bitsOf(ql.dequantized)));
      });
    }
  }

  it('without g_idx or a group size 3 groups of K = 320 are ambiguous; a group size that disagrees is refused', () => {
    const ql = rtnQuantize(randn(N * K, 44), N, K, { bits: 4, groupSize: 128, sym: false });
    const p = packGptq(ql, 'gptq');
    const t = { qweight: p.qweight, qzeros: p.qzeros, scales: p.scales };
    expect(code(() => unpackGptq(t, { N, K, bits: 4, format: 'gptq' }))).toMatch(/^BAD_CHECKPOINT: .*no g_idx and 3 groups do not divide K \(give the group size\)/);
    expect(code(() => unpackGptq(t, { N, K, bits: 4, format: 'gptq', groupSize: 64 }))).toMatch(/^BAD_CHECKPOINT: .*3 groups, but group size 64 gives ⌈K\/g⌉ = 5/);
  });

  it('K not a multiple of the pack factor: one line naming the module', () => {
    const ql = rtnQuantize(randn(N * 84, 45), N, 84, { bits: 4, groupSize: 32, sym: false });
    const e = code(() => packGptq(ql, 'gptq', 'model.layers.0.mlp.down_proj'));
    expect(e).toBe('UNSUPPORTED: cannot pack model.layers.0.mlp.down_proj with K=84 input features: K must be a multiple of 8 for 4-bit qweight');
  });
});

describe('MatMulNBits', () => {
  function graph(M: number, K: number, N: number, bs: number, kBlocks: number): Uint8Array {
    const g = new GraphBuilder('mmnb');
    const a = g.input('A', OnnxType.FLOAT, [M, K]);
    const b = g.input('B', OnnxType.UINT8, [N, kBlocks, bs / 2]);
    const s = g.input('scales', OnnxType.FLOAT, [N, kBlocks]);
    const z = g.input('zero_points', OnnxType.UINT8, [N, Math.ceil(kBlocks / 2)]);
    const y = g.msOp('MatMulNBits', [a, b, s, z], {
      K: attr.i(K),
      N: attr.i(N),
      bits: attr.i(4),
      block_size: attr.i(bs),
      accuracy_level: attr.i(0),
    });
    g.output('Y', y, OnnxType.FLOAT, [M, N]);
    return g.build();
  }

  for (const [K, N, bs, source] of [
    [96, 24, 32, 'unpacked GPTQ v1 checkpoint'],
    [128, 16, 64, 'quantizer output'],
    [320, 24, 128, 'unpacked GPTQ v1 checkpoint'], // partial last block: 128, 128, 64
    [80, 16, 32, 'quantizer output'], // partial last block: 32, 32, 16
  ] as const) {
    it(`Y = A · dequantizedᵀ (K=${K}, N=${N}, block ${bs}, ${source})`, async () => {
      const ql = rtnQuantize(skewed(N, K, bs, K), N, K, { bits: 4, groupSize: bs, sym: false });
      const src = source === 'quantizer output' ? ql : unpackGptq(packGptq(ql, 'gptq'), { N, K, bits: 4, format: 'gptq' });
      const mm = toMatMulNBits(src, bs);
      expect(mm.B.length).toBe(N * mm.kBlocks * (bs / 2));
      const M = 5;
      const A = randn(M * K, 42);
      const session = await pool.get(`test-mmnb:${K}:${N}:${bs}`, () => graph(M, K, N, bs, mm.kBlocks));
      const out = await pool.run(session, {
        A: new ort.Tensor('float32', A, [M, K]),
        B: new ort.Tensor('uint8', mm.B, [N, mm.kBlocks, bs / 2]),
        scales: new ort.Tensor('float32', mm.scales, [N, mm.kBlocks]),
        zero_points: new ort.Tensor('uint8', mm.zeroPoints, [N, Math.ceil(mm.kBlocks / 2)]),
      });
      const Y = out['Y']!.data as Float32Array;
      let err = 0;
      let scale = 0;
      for (let i = 0; i < M; i++) for (let n = 0; n < N; n++) {
        let ref = 0;
        for (let k = 0; k < K; k++) ref += A[i * K + k]! * ql.dequantized[n * K + k]!;
        err = Math.max(err, Math.abs(Y[i * N + n]! - ref));
        scale = Math.max(scale, Math.abs(ref));
      }
      expect(err / scale).toBeLessThan(1e-5);
    });
  }

  it('partial last block: the padding holds the zero point (weight 0) and the kernel ignores it anyway', async () => {
    const [K, N, bs, M] = [320, 24, 128, 5];
    const ql = rtnQuantize(skewed(N, K, 64, 46), N, K, { bits: 4, groupSize: bs, sym: false });
    const mm = toMatMulNBits(unpackGptq(packGptq(ql, 'gptq'), { N, K, bits: 4, format: 'gptq', groupSize: bs }), bs);
    expect(mm.kBlocks).toBe(3);
    const half = bs / 2;
    for (let n = 0; n < N; n++) {
      const z = ql.zeros[n * 3 + 2]!;
      for (let o = K - 2 * bs; o < bs; o++) expect((mm.B[(n * 3 + 2) * half + (o >> 1)]! >> ((o & 1) * 4)) & 0xf).toBe(z);
    }
    const A = randn(M * K, 47);
    const session = await pool.get(`test-mmnb:${K}:${N}:${bs}`, () => graph(M, K, N, bs, mm.kBlocks));
    const run = async (B: Uint8Array) =>
      (await pool.run(session, {
        A: new ort.Tensor('float32', A, [M, K]),
        B: new ort.Tensor('uint8', B, [N, mm.kBlocks, half]),
        scales: new ort.Tensor('float32', mm.scales, [N, mm.kBlocks]),
        zero_points: new ort.Tensor('uint8', mm.zeroPoints, [N, Math.ceil(mm.kBlocks / 2)]),
      }))['Y']!.data as Float32Array;
    const garbage = mm.B.slice();
    for (let n = 0; n < N; n++) for (let j = (K - 2 * bs) / 2; j < half; j++) garbage[(n * 3 + 2) * half + j] = 0xf0 | (n & 0xf);
    expect(Array.from(bitsOf(await run(garbage)))).toEqual(Array.from(bitsOf(await run(mm.B))));
  });

  it('rejects act-order g_idx, non-4-bit weights and bad block sizes', () => {
    const ql = rtnQuantize(randn(8 * 64, 1), 8, 64, { bits: 4, groupSize: 32, sym: false });
    expect(code(() => toMatMulNBits(ql, 24))).toMatch(/^BAD_OPTION: .*power of two/);
    expect(code(() => toMatMulNBits(ql, 16))).toMatch(/^BAD_OPTION/);
    const shuffled = { ...ql, gIdx: ql.gIdx.slice().reverse() };
    expect(code(() => toMatMulNBits(shuffled, 32))).toMatch(/^BAD_OPTION: .*g_idx/);
    const q8 = rtnQuantize(randn(8 * 64, 1), 8, 64, { bits: 8, groupSize: 32, sym: false });
    expect(code(() => toMatMulNBits(q8, 32))).toMatch(/^BAD_OPTION: .*4-bit/);
  });
});
