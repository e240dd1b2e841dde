import { describe, it, expect } from 'vitest';
import { DTYPE_BYTES, findNonFinite, float32ToBf16, float32ToF16, isDType, toFloat32, type DType } from '../../src/checkpoint/dtypes.js';
import { tensorBytes } from '../../src/checkpoint/safetensors.js';
import { bf16ToNumber, catchMoe, halfToNumber, mulberry32 } from './helpers.js';

/** float32 from a bit pattern. */
function f32(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0]!;
}
function bf16(x: number): number {
  return float32ToBf16(new Float32Array([x]))[0]!;
}
function f16(x: number): number {
  return float32ToF16(new Float32Array([x]))[0]!;
}
function allU16(): Uint16Array {
  return Uint16Array.from({ length: 65536 }, (_, i) => i);
}

describe('isDType / DTYPE_BYTES', () => {
  it('accepts exactly the known names', () => {
    expect(isDType('F32')).toBe(true);
    expect(isDType('F8_E4M3')).toBe(true);
    expect(isDType('f32')).toBe(false);
    expect(isDType('toString')).toBe(false);
    expect(isDType('__proto__')).toBe(false);
    expect(isDType(4)).toBe(false);
    expect(Object.keys(DTYPE_BYTES)).toHaveLength(15);
    expect(DTYPE_BYTES.BF16).toBe(2);
    expect(DTYPE_BYTES.I64).toBe(8);
    expect(DTYPE_BYTES.BOOL).toBe(1);
  });
});

describe('toFloat32', () => {
  it('decodes every half bit pattern like the arithmetic definition (subnormals, inf, nan, -0)', () => {
    const out = toFloat32('F16', tensorBytes(allU16()));
    // Collect mismatches and assert once: 65536 separate expects would dominate the run time.
    const bad: number[] = [];
    for (let h = 0; h < 65536; h++) {
      const want = halfToNumber(h);
      if (Number.isNaN(want) ? !Number.isNaN(out[h]!) : !Object.is(out[h], want)) bad.push(h);
    }
    expect(bad).toEqual([]);
    expect(Object.is(out[0x8000], -0)).toBe(true);
    expect(out[0x0001]).toBe(2 ** -24);
    expect(out[0x7bff]).toBe(65504);
    expect(out[0xfc00]).toBe(-Infinity);
  });

  it('decodes every bf16 bit pattern like the arithmetic definition', () => {
    const out = toFloat32('BF16', tensorBytes(allU16()));
    const bad: number[] = [];
    for (let b = 0; b < 65536; b++) {
      const want = bf16ToNumber(b);
      if (Number.isNaN(want) ? !Number.isNaN(out[b]!) : !Object.is(out[b], want)) bad.push(b);
    }
    expect(bad).toEqual([]);
    expect(Object.is(out[0x8000], -0)).toBe(true);
  });

  it('converts integer, float64 and bool types', () => {
    const cases: Array<[DType, ArrayBufferView, number[]]> = [
      ['I8', new Int8Array([-128, -1, 0, 127]), [-128, -1, 0, 127]],
      ['U8', new Uint8Array([0, 1, 255]), [0, 1, 255]],
      ['I16', new Int16Array([-32768, 7, 32767]), [-32768, 7, 32767]],
      ['U16', new Uint16Array([0, 65535]), [0, 65535]],
      ['I32', new Int32Array([-2147483648, 5, 16777216]), [-2147483648, 5, 16777216]],
      ['U32', new Uint32Array([4294967295, 3]), [4294967296, 3]],
      ['I64', new BigInt64Array([-5n, 1n << 40n]), [-5, 2 ** 40]],
      ['U64', new BigUint64Array([7n, 1n << 63n]), [7, 2 ** 63]],
      ['F64', new Float64Array([1.5, -1e300, Infinity]), [1.5, -Infinity, Infinity]],
      ['BOOL', new Uint8Array([0, 1, 2]), [0, 1, 1]],
      ['F32', new Float32Array([1.25, -0.5]), [1.25, -0.5]],
    ];
    for (const [dtype, arr, want] of cases) expect(Array.from(toFloat32(dtype, tensorBytes(arr))), dtype).toEqual(want);
  });

  it('decodes fp8 e4m3fn and e5m2', () => {
    const e4 = toFloat32('F8_E4M3', new Uint8Array([0x38, 0x7e, 0x7f, 0x01, 0xb8, 0x00, 0x80]));
    expect(Array.from(e4.subarray(0, 2))).toEqual([1, 448]);
    expect(Number.isNaN(e4[2]!)).toBe(true);
    expect(e4[3]).toBe(2 ** -9);
    expect(e4[4]).toBe(-1);
    expect(Object.is(e4[6], -0)).toBe(true);
    const e5 = toFloat32('F8_E5M2', new Uint8Array([0x3c, 0x7c, 0x7b, 0x01, 0xfc]));
    expect(Array.from(e5)).toEqual([1, Infinity, 57344, 2 ** -16, -Infinity]);
  });

  it('handles unaligned input by copying, with identical results', () => {
    const rand = mulberry32(7);
    const raw = new Uint8Array(65);
    for (let i = 0; i < raw.length; i++) raw[i] = Math.floor(rand() * 256);
    for (const dtype of ['F32', 'F16', 'BF16', 'F64', 'I32', 'I64', 'U16'] as DType[]) {
      const unaligned = raw.subarray(1, 65);
      const alignedCopy = unaligned.slice();
      const a = toFloat32(dtype, unaligned);
      const b = toFloat32(dtype, alignedCopy);
      expect(new Uint8Array(a.buffer), dtype).toEqual(new Uint8Array(b.buffer));
    }
  });

  it('returns a new array for F32 and rejects partial elements', () => {
    const src = new Float32Array([1, 2]);
    const out = toFloat32('F32', tensorBytes(src));
    out[0] = 9;
    expect(src[0]).toBe(1);
    expect(catchMoe(() => toFloat32('BF16', new Uint8Array(3)), 'BAD_CHECKPOINT').message).toMatch(/3 bytes/);
  });
});

describe('float32ToBf16', () => {
  it('handles zeros, infinities, NaN and max', () => {
    expect(bf16(0)).toBe(0x0000);
    expect(bf16(-0)).toBe(0x8000);
    expect(bf16(1)).toBe(0x3f80);
    expect(bf16(-2)).toBe(0xc000);
    expect(bf16(Infinity)).toBe(0x7f80);
    expect(bf16(-Infinity)).toBe(0xff80);
    for (const bits of [0x7fc00000, 0x7f800001, 0x7fffffff, 0xffffffff, 0xff800001]) {
      const b = float32ToBf16(new Float32Array(new Uint32Array([bits]).buffer))[0]!;
      expect((b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0, bits.toString(16)).toBe(true);
      expect(b & 0x8000).toBe((bits >>> 16) & 0x8000);
    }
    expect(bf16(f32(0x7f7f0000))).toBe(0x7f7f); // largest bf16
    expect(bf16(f32(0x7f7fffff))).toBe(0x7f80); // float32 max rounds up past bf16 max
  });

  it('rounds to nearest, ties to even, including subnormals', () => {
    expect(bf16(f32(0x3f808000))).toBe(0x3f80); // tie, even stays
    expect(bf16(f32(0x3f818000))).toBe(0x3f82); // tie, odd rounds up
    expect(bf16(f32(0x3f808001))).toBe(0x3f81); // just above tie
    expect(bf16(f32(0x3f807fff))).toBe(0x3f80); // just below tie
    expect(bf16(f32(0x00080000))).toBe(0x0008); // subnormal, exact
    expect(bf16(f32(0x00018000))).toBe(0x0002); // subnormal tie, odd rounds up
    expect(bf16(f32(0x007fffff))).toBe(0x0080); // largest subnormal rounds to smallest normal
  });

  it('round-trips every bf16 value through float32', () => {
    const all = allU16();
    const back = float32ToBf16(toFloat32('BF16', tensorBytes(all)));
    const bad: number[] = [];
    for (let b = 0; b < 65536; b++) {
      if (Number.isNaN(bf16ToNumber(b)) ? !Number.isNaN(bf16ToNumber(back[b]!)) : back[b] !== b) bad.push(b);
    }
    expect(bad).toEqual([]);
  });
});

describe('float32ToF16', () => {
  it('handles zeros, infinities, NaN, max and overflow', () => {
    expect(f16(0)).toBe(0x0000);
    expect(f16(-0)).toBe(0x8000);
    expect(f16(1)).toBe(0x3c00);
    expect(f16(-2)).toBe(0xc000);
    expect(f16(Infinity)).toBe(0x7c00);
    expect(f16(-Infinity)).toBe(0xfc00);
    expect(Number.isNaN(halfToNumber(f16(NaN)))).toBe(true);
    expect(Number.isNaN(halfToNumber(float32ToF16(new Float32Array(new Uint32Array([0xff800001]).buffer))[0]!))).toBe(true);
    expect(f16(65504)).toBe(0x7bff);
    expect(f16(65519)).toBe(0x7bff); // below the halfway point to 65536
    expect(f16(65520)).toBe(0x7c00); // tie between 65504 (odd) and 2^16 goes to inf
    expect(f16(1e6)).toBe(0x7c00);
    expect(f16(-1e30)).toBe(0xfc00);
    expect(f16(3e38)).toBe(0x7c00);
  });

  it('produces subnormals and rounds ties to even', () => {
    expect(f16(2 ** -24)).toBe(0x0001);
    expect(f16(2 ** -25)).toBe(0x0000); // tie with zero, zero is even
    expect(f16(-(2 ** -25))).toBe(0x8000);
    expect(f16(f32(0x33000001))).toBe(0x0001); // just above 2^-25
    expect(f16(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 ulp
    expect(f16(1023 * 2 ** -24)).toBe(0x03ff); // largest subnormal
    expect(f16(2 ** -14)).toBe(0x0400); // smallest normal
    expect(f16(2 ** -14 - 2 ** -26)).toBe(0x0400); // rounds up out of the subnormal range
    expect(f16(1e-10)).toBe(0x0000);
    expect(f16(f32(0x00000001))).toBe(0x0000); // float32 subnormal
    expect(f16(1 + 2 ** -11)).toBe(0x3c00); // tie, even stays
    expect(f16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, odd rounds up
    expect(f16(2049)).toBe(0x6800); // 2048
    expect(f16(2051)).toBe(0x6802); // 2052
  });

  it('round-trips every half value and picks the nearest half for random floats', () => {
    const all = allU16();
    const back = float32ToF16(toFloat32('F16', tensorBytes(all)));
    const bad: string[] = [];
    for (let h = 0; h < 65536; h++) {
      if (Number.isNaN(halfToNumber(h)) ? !Number.isNaN(halfToNumber(back[h]!)) : back[h] !== h) bad.push(`${h}`);
    }
    const rand = mulberry32(42);
    const xs = new Float32Array(20000);
    for (let i = 0; i < xs.length; i++) xs[i] = (rand() - 0.5) * 2 ** Math.floor(rand() * 44 - 28);
    const hs = float32ToF16(xs);
    for (let i = 0; i < xs.length; i++) {
      const x = xs[i]!;
      const h = hs[i]!;
      const mag = h & 0x7fff;
      const err = Math.abs(halfToNumber(h) - x);
      // Neighbours in magnitude: neither may be strictly closer, and at a tie the chosen one must be even.
      for (const nb of [mag - 1, mag + 1]) {
        if (nb < 0 || nb > 0x7bff) continue;
        const nerr = Math.abs(halfToNumber((h & 0x8000) | nb) - x);
        if (err > nerr || (err === nerr && (h & 1) === 1)) bad.push(`x=${x} h=${h.toString(16)}`);
      }
    }
    expect(bad).toEqual([]);
  });
});

describe('findNonFinite', () => {
  /** What findNonFinite should say about one element whose value (decoded independently) is `x`. */
  const expected = (x: number) => (Number.isNaN(x) ? { nan: 1, inf: 0, first: 0 } : Number.isFinite(x) ? null : { nan: 0, inf: 1, first: 0 });

  it('classifies every F16 and BF16 bit pattern like the arithmetic decoding (NaN, ±Inf, max finite)', () => {
    for (const [dtype, decode] of [['F16', halfToNumber], ['BF16', bf16ToNumber]] as const) {
      let flagged = 0;
      const wrong: string[] = [];
      for (let h = 0; h < 65536; h++) {
        const got = findNonFinite(dtype, tensorBytes(new Uint16Array([h])));
        if (JSON.stringify(got) !== JSON.stringify(expected(decode(h)))) wrong.push(`0x${h.toString(16)}`);
        if (got) flagged++;
      }
      expect(wrong, dtype).toEqual([]);
      // F16: exponent 31 with 1024 mantissas × 2 signs; BF16: exponent 255 with 128 × 2.
      expect(flagged).toBe(dtype === 'F16' ? 2048 : 256);
    }
    // the named patterns: ±Inf, quiet and signalling NaN, largest finite
    expect(findNonFinite('F16', tensorBytes(new Uint16Array([0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00, 0x7c01])))).toEqual({ nan: 2, inf: 2, first: 2 });
    expect(findNonFinite('BF16', tensorBytes(new Uint16Array([0x7f7f, 0xff7f, 0x7f80, 0xff80, 0x7fc0, 0x7f81])))).toEqual({ nan: 2, inf: 2, first: 2 });
  });

  it('classifies F32 and F64 specials and random bit patterns like the typed-array decoding', () => {
    const f32s = [0, 0x80000000, 1, 0x7f7fffff, 0xff7fffff, 0x00800000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffffffff];
    const rnd = mulberry32(7);
    for (let i = 0; i < 20000; i++) f32s.push(Math.floor(rnd() * 2 ** 32));
    const same = (got: unknown, want: unknown) => JSON.stringify(got) === JSON.stringify(want);
    expect(f32s.filter((b) => !same(findNonFinite('F32', tensorBytes(new Uint32Array([b]))), expected(f32(b)))).map((b) => b.toString(16))).toEqual([]);
    // F64 as [low word, high word]; a NaN whose mantissa bits are all in the low word must count as NaN, not Inf.
    const f64s: Array<[number, number]> = [[0, 0], [0, 0x7fefffff], [0xffffffff, 0x7fefffff], [0, 0x7ff00000], [0, 0xfff00000], [1, 0x7ff00000], [0, 0x7ff80000], [0, 0x00000001]];
    for (let i = 0; i < 20000; i++) f64s.push([Math.floor(rnd() * 2 ** 32), Math.floor(rnd() * 2 ** 32)]);
    const bad64 = f64s.filter(([lo, hi]) => {
      const words = new Uint32Array([lo, hi]);
      return !same(findNonFinite('F64', tensorBytes(words)), expected(new Float64Array(words.buffer)[0]!));
    });
    expect(bad64.map(([lo, hi]) => `${hi.toString(16)}_${lo.toString(16)}`)).toEqual([]);
    expect(findNonFinite('F64', tensorBytes(new Float64Array([1, 2, Infinity, NaN, -Infinity, Number.MAX_VALUE])))).toEqual({ nan: 1, inf: 2, first: 2 });
  });

  it('classifies every FP8 pattern (E4M3fn: NaN only, no Inf; E5M2: like the high byte of a half)', () => {
    for (const dtype of ['F8_E4M3', 'F8_E5M2'] as const) {
      for (let b = 0; b < 256; b++) {
        const one = new Uint8Array([b]);
        expect(findNonFinite(dtype, one), `${dtype} 0x${b.toString(16)}`).toEqual(expected(toFloat32(dtype, one)[0]!));
      }
    }
    expect(findNonFinite('F8_E4M3', new Uint8Array([0x7e, 0xfe, 0x7f, 0xff]))).toEqual({ nan: 2, inf: 0, first: 2 });
  });

  it('counts NaN and Inf from the first bad element on, at any alignment; integer dtypes are never flagged', () => {
    const v = new Float32Array([1, 2, 3, NaN, 5, Infinity, -Infinity, NaN, 9]);
    expect(findNonFinite('F32', tensorBytes(v))).toEqual({ nan: 2, inf: 2, first: 3 });
    expect(findNonFinite('F32', tensorBytes(v.subarray(0, 3)))).toBeNull();
    const shifted = new Uint8Array(v.byteLength + 1);
    shifted.set(tensorBytes(v), 1);
    expect(findNonFinite('F32', shifted.subarray(1))).toEqual({ nan: 2, inf: 2, first: 3 });
    expect(findNonFinite('F32', new Uint8Array(0))).toBeNull();
    // the same bits that are NaN/Inf as floats are ordinary integers
    const bits = tensorBytes(new Uint32Array([0x7fc00000, 0x7f800000, 0xffffffff, 0xffffffff]));
    for (const d of ['I8', 'U8', 'I16', 'U16', 'I32', 'U32', 'I64', 'U64', 'BOOL'] as DType[]) expect(findNonFinite(d, bits), d).toBeNull();
    expect(catchMoe(() => findNonFinite('F32', new Uint8Array(6)), 'BAD_CHECKPOINT').message).toMatch(/not a whole number of F32/);
  });
});
