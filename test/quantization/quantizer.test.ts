import { describe, expect, it } from 'vitest';
import { float32ToF16, toFloat32 } from '../../src/checkpoint/dtypes.js';
import { findParams, quantizeValue, roundHalfEven, rtnQuantize } from '../../src/quantization/quantizer.js';
import { code, randn } from './helpers.js';

function f16(x: number): number {
  return toFloat32('F16', new Uint8Array(float32ToF16(Float32Array.of(x)).buffer))[0]!;
}

describe('roundHalfEven (torch.round)', () => {
  it('rounds ties to even', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 2.5001].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2, -2, 2, 3]);
  });
});

describe('findParams', () => {
  it('asym: xmin=min(min,0), xmax=max(max,0), fp16 scale, zero from the rounded scale', () => {
    const row = Float32Array.of(0.3, 1.7, 0.9, 0.1); // all positive: xmin = 0
    const p = findParams(row, 1, 4, 1, 0, 4, 4, false);
    expect(p.scale[0]).toBe(f16(Math.fround(1.7) / 15));
    expect(p.zero[0]).toBe(0);
    const neg = Float32Array.of(-0.3, -1.2, -0.9, -0.1); // all negative: xmax = 0 → zero = maxq
    const pn = findParams(neg, 1, 4, 1, 0, 4, 4, false);
    expect(pn.zero[0]).toBe(15);
    const mixed = Float32Array.of(-0.5, 1.0, 0.2, -0.1);
    const pm = findParams(mixed, 1, 4, 1, 0, 4, 3, false);
    const s = f16(Math.fround(1.5) / 7);
    expect(pm.scale[0]).toBe(s);
    expect(pm.zero[0]).toBe(roundHalfEven(Math.fround(0.5 / s)));
  });

  it('sym: xmax=max(|xmin|,xmax), zero=(maxq+1)/2; an all-non-negative row keeps xmin=0 like the reference', () => {
    const row = Float32Array.of(-2, 0.5, 1, 0);
    const p = findParams(row, 1, 4, 1, 0, 4, 4, true);
    expect(p.scale[0]).toBe(f16(4 / 15));
    expect(p.zero[0]).toBe(8);
    const pos = findParams(Float32Array.of(3, 1, 2, 0.5), 1, 4, 1, 0, 4, 4, true);
    expect(pos.scale[0]).toBe(f16(3 / 15));
    expect(pos.zero[0]).toBe(8);
    for (const [bits, z] of [[2, 2], [3, 4], [8, 128]] as const) {
      expect(findParams(row, 1, 4, 1, 0, 4, bits, true).zero[0]).toBe(z);
    }
  });

  it('all-zero rows use [-1, 1]', () => {
    const z = new Float32Array(8);
    const a = findParams(z, 2, 4, 1, 0, 4, 4, false);
    expect(Array.from(a.scale)).toEqual([f16(2 / 15), f16(2 / 15)]);
    expect(a.zero[0]).toBe(roundHalfEven(Math.fround(1 / f16(2 / 15))));
    const s = findParams(z, 2, 4, 1, 0, 4, 4, true);
    expect(s.scale[0]).toBe(f16(2 / 15));
    expect(s.zero[0]).toBe(8);
  });

  it('reads strided layouts (Wᵀ) the same as row-major W', () => {
    const W = randn(6 * 10, 3);
    const WT = new Float32Array(60);
    for (let n = 0; n < 6; n++) for (let k = 0; k < 10; k++) WT[k * 6 + n] = W[n * 10 + k]!;
    expect(findParams(WT, 6, 1, 6, 2, 7, 4, false)).toEqual(findParams(W, 6, 10, 1, 2, 7, 4, false));
  });
});

describe('rtnQuantize', () => {
  const N = 8;
  const K = 64;
  const W = randn(N * K, 11, 0.05);

  for (const bits of [2, 3, 4, 8]) {
    for (const sym of [false, true]) {
      it(`${bits}-bit ${sym ? 'sym' : 'asym'}: fp16-exact scales, levels in range, dequantized consistent`, () => {
        const ql = rtnQuantize(W, N, K, { bits, groupSize: 16, sym });
        const maxq = 2 ** bits - 1;
        expect(ql.groupSize).toBe(16);
        expect(ql.scales.length).toBe(N * 4);
        for (const s of ql.scales) {
          expect(s).toBeGreaterThan(0);
          expect(f16(s)).toBe(s);
        }
        for (const v of ql.q) expect(v).toBeLessThanOrEqual(maxq);
        for (const v of ql.zeros) expect(v).toBeLessThanOrEqual(maxq);
        expect(Array.from(ql.gIdx.slice(14, 18))).toEqual([0, 0, 1, 1]);
        for (let n = 0; n < N; n++) {
          for (let k = 0; k < K; k++) {
            const g = n * 4 + (k >> 4);
            const s = ql.scales[g]!;
            const z = ql.zeros[g]!;
            expect(ql.q[n * K + k]).toBe(quantizeValue(W[n * K + k]!, s, z, maxq));
            expect(ql.dequantized[n * K + k]).toBe(Math.fround((ql.q[n * K + k]! - z) * s));
            // half a step, plus the clipping the fp16-rounded scale can cause at the ends of the range
            // (sym grids may also clip the positive end by a whole step)
            const bound = s * (0.5 + maxq * 2 ** -11) + 1e-7;
            if (!sym) expect(Math.abs(ql.dequantized[n * K + k]! - W[n * K + k]!)).toBeLessThanOrEqual(bound);
          }
        }
      });
    }
  }

  it('groupSize -1 is one group per row', () => {
    const ql = rtnQuantize(W, N, K, { bits: 4, groupSize: -1, sym: false });
    expect(ql.groupSize).toBe(K);
    expect(ql.scales.length).toBe(N);
    expect(ql.gIdx.every((g) => g === 0)).toBe(true);
  });

  it('a group larger than K is one group per row', () => {
    const ql = rtnQuantize(W.subarray(0, 4 * 32), 4, 32, { bits: 4, groupSize: 128, sym: false });
    expect(ql.groupSize).toBe(32);
    expect(ql.scales.length).toBe(4);
  });

  it('errors: bad bits and group sizes are BAD_OPTION, non-finite weights NUMERIC', () => {
    expect(code(() => rtnQuantize(W, N, K, { bits: 5, groupSize: 16, sym: false }))).toMatch(/^BAD_OPTION: --bits 5/);
    expect(code(() => rtnQuantize(W, N, K, { bits: 4, groupSize: 0, sym: false }))).toMatch(/^BAD_OPTION/);
    const bad = W.slice();
    bad[7] = NaN;
    expect(code(() => rtnQuantize(bad, N, K, { bits: 4, groupSize: 16, sym: false }))).toMatch(/^NUMERIC/);
  });

  it('tiny groups whose fp16 scale would underflow still quantize', () => {
    const tiny = new Float32Array(16).fill(1e-9);
    const ql = rtnQuantize(tiny, 1, 16, { bits: 4, groupSize: 16, sym: false });
    expect(ql.scales[0]).toBe(2 ** -24);
    expect(Number.isFinite(ql.dequantized[0]!)).toBe(true);
  });
});

describe('rtnQuantize: a group size that does not divide K (shorter last group)', () => {
  // DeepSeek-V2-Lite's dense down_proj has K = 10944 = 85·128 + 64; scaled down: K = 320 = 128 + 128 + 64.
  const N = 16;
  const K = 320;
  const W = randn(N * K, 21, 0.05);
  // One row whose largest values sit in the last 64 columns, so a group read past them, or a last group that also
  // took earlier columns, would give other parameters.
  for (let k = 256; k < K; k++) W[3 * K + k] = W[3 * K + k]! * 20;
  for (let k = 0; k < 256; k++) W[5 * K + k] = W[5 * K + k]! * 20;
  const slice = (k0: number, k1: number): Float32Array => {
    const out = new Float32Array(N * (k1 - k0));
    for (let n = 0; n < N; n++) out.set(W.subarray(n * K + k0, n * K + k1), n * (k1 - k0));
    return out;
  };

  for (const bits of [2, 3, 4, 8]) {
    for (const sym of [false, true]) {
      it(`${bits}-bit ${sym ? 'sym' : 'asym'}, g=128: groups of 128, 128, 64, each quantized exactly as its own columns alone`, () => {
        const ql = rtnQuantize(W, N, K, { bits, groupSize: 128, sym });
        expect(ql.groupSize).toBe(128);
        expect(ql.scales.length).toBe(N * 3);
        expect(ql.zeros.length).toBe(N * 3);
        expect(Array.from(ql.gIdx)).toEqual(Array.from({ length: K }, (_, k) => Math.floor(k / 128)));
        // The full groups: what K = 256 with g = 128 gives; the last group: what its 64 columns alone give (g = -1).
        const head = rtnQuantize(slice(0, 256), N, 256, { bits, groupSize: 128, sym });
        const tail = rtnQuantize(slice(256, K), N, 64, { bits, groupSize: -1, sym });
        const last = findParams(W, N, K, 1, 256, 320, bits, sym);
        for (let n = 0; n < N; n++) {
          for (let g = 0; g < 2; g++) {
            expect(ql.scales[n * 3 + g]).toBe(head.scales[n * 2 + g]);
            expect(ql.zeros[n * 3 + g]).toBe(head.zeros[n * 2 + g]);
          }
          expect(ql.scales[n * 3 + 2]).toBe(tail.scales[n]);
          expect(ql.zeros[n * 3 + 2]).toBe(tail.zeros[n]);
          expect(ql.scales[n * 3 + 2]).toBe(last.scale[n]);
          expect(ql.zeros[n * 3 + 2]).toBe(last.zero[n]);
          for (let k = 0; k < K; k++) {
            const [src, kk, w] = k < 256 ? [head, k, 256] : [tail, k - 256, 64];
            expect(ql.q[n * K + k]).toBe(src.q[n * w + kk]);
            expect(ql.dequantized[n * K + k]).toBe(src.dequantized[n * w + kk]);
          }
        }
        // the scaled rows really make the last group's range differ from the groups before it
        expect(ql.scales[3 * 3 + 2]).toBeGreaterThan(5 * ql.scales[3 * 3 + 1]!);
        expect(ql.scales[5 * 3 + 2]! * 5).toBeLessThan(ql.scales[5 * 3 + 1]!);
      });
    }
  }

  it('g=24 on K=64 (24, 24, 16) and g=-1 or g ≥ K (one group) still work; invalid group sizes are BAD_OPTION', () => {
    const ql = rtnQuantize(W.subarray(0, N * 64), N, 64, { bits: 4, groupSize: 24, sym: false });
    expect(ql.groupSize).toBe(24);
    expect(ql.scales.length).toBe(N * 3);
    expect(ql.gIdx[47]).toBe(1);
    expect(ql.gIdx[48]).toBe(2);
    expect(rtnQuantize(W, N, K, { bits: 4, groupSize: 512, sym: false }).groupSize).toBe(K);
    expect(code(() => rtnQuantize(W, N, K, { bits: 4, groupSize: 0, sym: false }))).toMatch(/^BAD_OPTION: --group-size 0 is invalid/);
    expect(code(() => rtnQuantize(W, N, K, { bits: 4, groupSize: 12.5, sym: false }))).toMatch(/^BAD_OPTION/);
  });
});
