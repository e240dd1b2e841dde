/**
 * Safetensors element types and conversions between them and float32.
 *
 * All multi-byte conversions read the host's native byte order through typed arrays; safetensors is
 * little-endian and so is every platform Node ships for, which we check once below rather than per element.
 */
import { fail } from '../errors.js';

/** Element type names as they appear in a safetensors header's `dtype` field. */
export type DType =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U8'
  | 'U16'
  | 'U32'
  | 'U64'
  | 'BOOL'
  | 'F8_E4M3'
  | 'F8_E5M2';

/** Size in bytes of one element of each dtype. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  U16: 2,
  U32: 4,
  U64: 8,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
});

/** True when `s` is one of the dtype names we know (own keys only, so `"toString"` is rejected). */
export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

// Typed-array views below assume little-endian memory; fail loudly instead of returning garbage on a BE host.
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Returns a buffer holding `bytes` whose byteOffset is a multiple of `align`, copying only when needed:
 * typed-array views over an ArrayBuffer throw a RangeError on unaligned offsets.
 */
function aligned(bytes: Uint8Array, align: number): { buffer: ArrayBufferLike; byteOffset: number } {
  if (bytes.byteOffset % align === 0) return { buffer: bytes.buffer, byteOffset: bytes.byteOffset };
  const copy = bytes.slice();
  return { buffer: copy.buffer, byteOffset: 0 };
}

let halfTable: Uint32Array | undefined;

/** float32 bit patterns for all 65536 half-precision values, built on first use (256 KiB). */
function getHalfTable(): Uint32Array {
  if (halfTable) return halfTable;
  const t = new Uint32Array(65536);
  const f = new Float32Array(1);
  const fBits = new Uint32Array(f.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) {
      // Zero or subnormal: mant * 2^-24 is exact in float32; apply the sign by bits so -0 stays -0.
      f[0] = mant * 2 ** -24;
      t[h] = (sign | fBits[0]!) >>> 0;
    } else if (exp === 31) {
      // Inf or NaN; shifting the mantissa keeps NaN payloads (and the quiet bit) intact.
      t[h] = (sign | 0x7f800000 | (mant << 13)) >>> 0;
    } else {
      t[h] = (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
    }
  }
  halfTable = t;
  return t;
}

let e4m3Table: Float32Array | undefined;

/** Values of all 256 F8_E4M3 (the "fn" variant used by PyTorch/DeepSeek: no inf, NaN = S.1111.111). */
function getE4m3Table(): Float32Array {
  if (e4m3Table) return e4m3Table;
  const t = new Float32Array(256);
  for (let b = 0; b < 256; b++) {
    const s = b & 0x80 ? -1 : 1;
    const exp = (b >>> 3) & 0xf;
    const mant = b & 7;
    if (exp === 15 && mant === 7) t[b] = NaN;
    else if (exp === 0) t[b] = s * mant * 2 ** -9;
    else t[b] = s * (1 + mant / 8) * 2 ** (exp - 7);
  }
  e4m3Table = t;
  return t;
}

/**
 * Expand 16-bit floats to float32 in place: `dst` holds n float32 slots whose upper half (bytes 2n..4n) already
 * contains the n raw 16-bit values. Element i is read (at byte 2n + 2i) before anything at or above it is written,
 * so no intermediate buffer is needed — streaming loads keep one buffer per tensor.
 */
export function expand16InPlace(dtype: 'BF16' | 'F16', dst: Float32Array): void {
  const n = dst.length;
  const src = new Uint16Array(dst.buffer, dst.byteOffset + 2 * n, n);
  const out = new Uint32Array(dst.buffer, dst.byteOffset, n);
  if (dtype === 'BF16') {
    for (let i = 0; i < n; i++) out[i] = src[i]! << 16;
  } else {
    const table = getHalfTable();
    for (let i = 0; i < n; i++) out[i] = table[src[i]!]!;
  }
}

/** Raw little-endian int32 tensor bytes (I32: GPTQ qweight/qzeros/g_idx, token ids) as a new Int32Array. */
export function int32Of(bytes: Uint8Array): Int32Array {
  return new Int32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/** Non-finite elements found by {@link findNonFinite}. */
export interface NonFinite {
  nan: number;
  /** +Inf and −Inf together. */
  inf: number;
  /** Element index of the first NaN or ±Inf. */
  first: number;
}

/**
 * NaN and ±Inf among raw little-endian tensor bytes of a float `dtype` (F64/F32/F16/BF16/F8), null when every
 * element is finite or the dtype is an integer type. Tests exponent bits, so it costs one pass with no conversion;
 * the counting pass runs only once a bad element is found.
 */
export function findNonFinite(dtype: DType, bytes: Uint8Array): NonFinite | null {
  const test = NON_FINITE[dtype];
  if (!test) return null;
  const size = DTYPE_BYTES[dtype];
  if (bytes.byteLength % size !== 0) {
    throw fail('BAD_CHECKPOINT', `${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  if (size > 1 && !LITTLE_ENDIAN) throw fail('UNSUPPORTED', 'big-endian hosts are not supported');
  const { buffer, byteOffset } = aligned(bytes, Math.min(size, 4));
  return test(buffer, byteOffset, bytes.byteLength / size);
}

type NonFiniteTest = (buffer: ArrayBufferLike, byteOffset: number, n: number) => NonFinite | null;

/**
 * One scan over `words` for an all-ones exponent (`(w & exp) === exp`, the only NaN/Inf patterns), then a count
 * of NaN (non-zero mantissa `mant`) and Inf from the first hit. `wide`: F64 as pairs of 32-bit words, the high word
 * holding sign, exponent and the top of the mantissa, the low word the rest of the mantissa.
 */
function scanWords(words: Uint8Array | Uint16Array | Uint32Array, exp: number, mant: number, wide = false): NonFinite | null {
  const stride = wide ? 2 : 1;
  const n = words.length / stride;
  let i = 0;
  for (let j = stride - 1; i < n; i++, j += stride) if ((words[j]! & exp) === exp) break;
  if (i === n) return null;
  const out: NonFinite = { nan: 0, inf: 0, first: i };
  for (let j = i * stride + stride - 1; i < n; i++, j += stride) {
    const w = words[j]!;
    if ((w & exp) !== exp) continue;
    if ((w & mant) !== 0 || (wide && words[j - 1]! !== 0)) out.nan++;
    else out.inf++;
  }
  return out;
}

const NON_FINITE: Partial<Record<DType, NonFiniteTest>> = {
  F32: (b, o, n) => scanWords(new Uint32Array(b, o, n), 0x7f800000, 0x007fffff),
  F64: (b, o, n) => scanWords(new Uint32Array(b, o, 2 * n), 0x7ff00000, 0x000fffff, true),
  F16: (b, o, n) => scanWords(new Uint16Array(b, o, n), 0x7c00, 0x03ff),
  BF16: (b, o, n) => scanWords(new Uint16Array(b, o, n), 0x7f80, 0x007f),
  F8_E5M2: (b, o, n) => scanWords(new Uint8Array(b, o, n), 0x7c, 0x03),
  // E4M3 "fn" has no infinities; S.1111.111 is its only NaN, so "exponent" here is all seven magnitude bits.
  F8_E4M3: (b, o, n) => scanWords(new Uint8Array(b, o, n), 0x7f, 0x7f),
};

/**
 * Converts raw little-endian tensor bytes of `dtype` to a new Float32Array (never aliasing `bytes`).
 * Integers beyond 2^24 lose precision, as any float32 conversion must; BOOL maps to 0/1.
 * Throws BAD_CHECKPOINT when the byte length is not a whole number of elements, UNSUPPORTED on a big-endian host.
 */
export function toFloat32(dtype: DType, bytes: Uint8Array): Float32Array {
  const size = DTYPE_BYTES[dtype];
  if (bytes.byteLength % size !== 0) {
    throw fail('BAD_CHECKPOINT', `${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  if (size > 1 && !LITTLE_ENDIAN) throw fail('UNSUPPORTED', 'big-endian hosts are not supported');
  const n = bytes.byteLength / size;
  const out = new Float32Array(n);
  const { buffer, byteOffset } = aligned(bytes, size);
  switch (dtype) {
    case 'F32':
      out.set(new Float32Array(buffer, byteOffset, n));
      break;
    case 'BF16': {
      // bf16 is the top half of a float32, so a shift reproduces it exactly (NaN payloads included).
      const src = new Uint16Array(buffer, byteOffset, n);
      const dst = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) dst[i] = src[i]! << 16;
      break;
    }
    case 'F16': {
      const src = new Uint16Array(buffer, byteOffset, n);
      const dst = new Uint32Array(out.buffer);
      const table = getHalfTable();
      for (let i = 0; i < n; i++) dst[i] = table[src[i]!]!;
      break;
    }
    case 'F8_E5M2': {
      // E5M2 is exactly the high byte of an IEEE half.
      const dst = new Uint32Array(out.buffer);
      const table = getHalfTable();
      for (let i = 0; i < n; i++) dst[i] = table[bytes[i]! << 8]!;
      break;
    }
    case 'F8_E4M3': {
      const table = getE4m3Table();
      for (let i = 0; i < n; i++) out[i] = table[bytes[i]!]!;
      break;
    }
    case 'F64':
      copyInto(out, new Float64Array(buffer, byteOffset, n));
      break;
    case 'I64':
      copyBig(out, new BigInt64Array(buffer, byteOffset, n));
      break;
    case 'U64':
      copyBig(out, new BigUint64Array(buffer, byteOffset, n));
      break;
    case 'I32':
      copyInto(out, new Int32Array(buffer, byteOffset, n));
      break;
    case 'U32':
      copyInto(out, new Uint32Array(buffer, byteOffset, n));
      break;
    case 'I16':
      copyInto(out, new Int16Array(buffer, byteOffset, n));
      break;
    case 'U16':
      copyInto(out, new Uint16Array(buffer, byteOffset, n));
      break;
    case 'I8':
      copyInto(out, new Int8Array(buffer, byteOffset, n));
      break;
    case 'U8':
      copyInto(out, bytes);
      break;
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = bytes[i] === 0 ? 0 : 1;
      break;
  }
  return out;
}

function copyInto(out: Float32Array, src: ArrayLike<number>): void {
  for (let i = 0; i < out.length; i++) out[i] = src[i]!;
}

function copyBig(out: Float32Array, src: BigInt64Array | BigUint64Array): void {
  for (let i = 0; i < out.length; i++) out[i] = Number(src[i]!);
}

/**
 * Converts float32 values to bfloat16 bit patterns with round-to-nearest-even (as PyTorch does);
 * values above the bf16 range round to ±inf, NaN stays NaN (quiet, sign kept).
 */
export function float32ToBf16(src: Float32Array): Uint16Array {
  const n = src.length;
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const x = bits[i]!;
    if ((x & 0x7fffffff) > 0x7f800000) {
      // Rounding could carry a NaN's payload into inf, so keep the top bits and force the quiet bit.
      out[i] = (x >>> 16) | 0x0040;
    } else {
      // Adding 0x7fff plus the kept LSB rounds ties to even; carries propagate into the exponent correctly.
      out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    }
  }
  return out;
}

/**
 * Converts float32 values to IEEE half bit patterns with round-to-nearest-even, producing subnormals
 * for tiny values and ±inf for values that round beyond 65504; NaN stays NaN (quiet, sign kept).
 */
export function float32ToF16(src: Float32Array): Uint16Array {
  const n = src.length;
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) out[i] = f32BitsToHalf(bits[i]!);
  return out;
}

function f32BitsToHalf(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Below 2^-25 everything rounds to zero (2^-25 itself is a tie that goes to even, i.e. zero).
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) === 1)) h++;
    // A carry out of the subnormal mantissa lands on exponent 1, which is the right answer.
    return sign | h;
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // carry may reach 0x7c00 = inf, as it should
  return h;
}
