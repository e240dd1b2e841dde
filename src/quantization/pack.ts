/**
 * Bit packing between a {@link QuantizedLinear} and (a) the GPTQ checkpoint tensors written by AutoGPTQ / GPTQModel
 * (`qweight`, `qzeros`, `scales`, `g_idx`), (b) onnxruntime's `com.microsoft::MatMulNBits` inputs.
 * Pure JavaScript integer work; no onnxruntime, no I/O.
 *
 * GPTQ layout (pack = 32 / bits values per int32, first value in the lowest bits; 3 bits: 32 values in 3 words as
 * one little-endian bit stream, AutoGPTQ's scheme):
 *   qweight [K/pack, N]: qweight[r, n] = Σ_j q[n, pack·r + j] << (bits·j)       (packed along K, transposed)
 *   qzeros  [G, N/pack]: qzeros[g, c]  = Σ_j zs[g, pack·c + j] << (bits·j)      (packed along N)
 *   scales  [G, N] float16;  g_idx [K] int32;  W[n, k] = scales[g, n] · (q[n, k] − z[g, n]) with g = g_idx[k]
 *   G = ⌈K / group_size⌉: a group size that does not divide K leaves a shorter last group (g_idx = k // group_size).
 *   checkpoint_format 'gptq' (v1) stores zs = (z − 1) & maxq, 'gptq_v2' stores zs = z.
 *
 * v1 cannot represent z = 0: it is stored as maxq (15 for 4 bits). Like onnxruntime-genai we decode v1 nibble by
 * nibble as z = (zs + 1) & maxq, which recovers 0. GPTQModel instead adds 0x11111111 to the packed word, so the
 * carry from such a nibble corrupts its neighbour, and kernels that add 1 without masking read 16; `packGptq`
 * therefore counts these zero points (`v1ZeroOverflow`) so the caller can warn or choose gptq_v2.
 */
import { float32ToF16, toFloat32 } from '../checkpoint/dtypes.js';
import { fail } from '../errors.js';
import { dequantize, maxQ, type QuantizedLinear } from './quantizer.js';

/** `checkpoint_format` of a GPTQ checkpoint. */
export type GptqFormat = 'gptq' | 'gptq_v2';

/** The four tensors of one GPTQ-quantized Linear, as stored (int32 bit patterns, fp16 scales). */
export interface GptqTensors {
  /** [K/pack, N]. */
  qweight: Int32Array;
  /** [G, N/pack]. */
  qzeros: Int32Array;
  /** float16 bit patterns [G, N]. */
  scales: Uint16Array;
  /** [K]. */
  gIdx: Int32Array;
}

/** Result of {@link packGptq}. */
export interface PackedGptq extends GptqTensors {
  /** v1 only: how many zero points are 0 (stored as maxq; readers that do not mask misread them). */
  v1ZeroOverflow: number;
  /** Rows of qweight (K·bits/32) and columns of qzeros (N·bits/32). */
  qweightRows: number;
  qzerosCols: number;
}

/** Integer view of a GPTQ checkpoint's Linear, same layout as {@link QuantizedLinear}. */
export interface UnpackedGptq {
  N: number;
  K: number;
  bits: number;
  /** The group size: `shape.groupSize` when given, else K / G (⌈K/g⌉ = G groups, the last one maybe shorter). */
  groupSize: number;
  /** [N, K] integer levels, natural column order. */
  q: Uint8Array;
  /** [N, G]. */
  scales: Float32Array;
  /** [N, G], the true zero points (v1's −1 undone). */
  zeros: Uint8Array;
  /** [K]. */
  gIdx: Int32Array;
  /** [N, K] = (q − zeros[g]) · scales[g]. */
  dequantized: Float32Array;
}

/** Inputs of `com.microsoft::MatMulNBits` (4 bits) for Y = A · dequant(B)ᵀ. */
export interface MatMulNBitsTensors {
  N: number;
  K: number;
  blockSize: number;
  kBlocks: number;
  /** uint8 [N, kBlocks, blockSize/2]; element 2j in the low nibble. */
  B: Uint8Array;
  /** [N, kBlocks]. */
  scales: Float32Array;
  /** uint8 [N, ceil(kBlocks/2)]; even block in the low nibble. */
  zeroPoints: Uint8Array;
}

/**
 * How GPTQ packs `bits`-bit values into int32 words: a little-endian bit stream, `values` values in `words` words
 * (2 bits: 16 in 1, 4: 8 in 1, 8: 4 in 1, 3: 32 in 3 — AutoGPTQ's 3-bit scheme, where a value may straddle two
 * words, is the same bit stream).
 */
export function packFactorOf(bits: number): { values: number; words: number } {
  if (bits === 3) return { values: 32, words: 3 };
  return { values: 32 / bits, words: 1 };
}

const WRITE_BITS = [2, 3, 4, 8];

function checkBits(bits: number, what: 'write' | 'read'): { values: number; words: number } {
  if (!WRITE_BITS.includes(bits)) {
    throw what === 'write'
      ? fail('BAD_OPTION', `the GPTQ writer packs 2, 3, 4 or 8 bits (got ${bits})`)
      : fail('UNSUPPORTED', `GPTQ checkpoints with bits=${bits} are not supported (only ${WRITE_BITS.join(', ')})`);
  }
  return packFactorOf(bits);
}

/** Writes value v (bits wide) as element i of the bit stream starting at word `base` of `out`. */
function putBits(out: Int32Array, base: number, stride: number, i: number, bits: number, v: number): void {
  const bit = i * bits;
  const w = bit >>> 5;
  const sh = bit & 31;
  out[base + w * stride]! |= v << sh;
  if (sh + bits > 32) out[base + (w + 1) * stride]! |= v >>> (32 - sh);
}

/** Reads element i (bits wide) of the bit stream starting at word `base` of `src`. */
function getBits(src: Int32Array, base: number, stride: number, i: number, bits: number, mask: number): number {
  const bit = i * bits;
  const w = bit >>> 5;
  const sh = bit & 31;
  let v = src[base + w * stride]! >>> sh;
  if (sh + bits > 32) v |= src[base + (w + 1) * stride]! << (32 - sh);
  return v & mask;
}

/**
 * Packs a quantized Linear into GPTQ checkpoint tensors (`format` 'gptq' = v1 with zero − 1, 'gptq_v2' = as is).
 * Any number of groups G = ⌈K / groupSize⌉ (a shorter last group is fine); the packing itself runs along K and N.
 * Throws BAD_OPTION for bit widths other than 2, 3, 4, 8; UNSUPPORTED when K or N is not a multiple of the values
 * per packed group (32/bits; 32 for 3 bits). `what` (e.g. the module name) starts those messages.
 */
export function packGptq(ql: QuantizedLinear, format: GptqFormat, what = 'a GPTQ layer'): PackedGptq {
  const { N, K, bits } = ql;
  const { values, words } = checkBits(bits, 'write');
  if (K % values !== 0) throw fail('UNSUPPORTED', `cannot pack ${what} with K=${K} input features: K must be a multiple of ${values} for ${bits}-bit qweight`);
  if (N % values !== 0) throw fail('UNSUPPORTED', `cannot pack ${what} with N=${N} output features: N must be a multiple of ${values} for ${bits}-bit qzeros`);
  const G = ql.scales.length / N;
  if (!Number.isInteger(G) || G !== Math.ceil(K / ql.groupSize)) {
    throw fail('BAD_OPTION', `cannot pack ${what}: ${ql.scales.length} scales for N=${N}, K=${K}, group size ${ql.groupSize} (expected N·⌈K/g⌉)`);
  }
  const mask = maxQ(bits);
  const rowsW = (K / values) * words;
  const qweight = new Int32Array(rowsW * N);
  for (let n = 0; n < N; n++) {
    const src = n * K;
    for (let k = 0; k < K; k++) {
      const r = Math.floor(k / values);
      putBits(qweight, r * words * N + n, N, k - r * values, bits, ql.q[src + k]! & mask);
    }
  }
  const colsZ = (N / values) * words;
  const qzeros = new Int32Array(G * colsZ);
  let v1ZeroOverflow = 0;
  for (let g = 0; g < G; g++) {
    for (let n = 0; n < N; n++) {
      const z = ql.zeros[n * G + g]!;
      if (format === 'gptq' && z === 0) v1ZeroOverflow++;
      const c = Math.floor(n / values);
      putBits(qzeros, g * colsZ + c * words, 1, n - c * values, bits, (format === 'gptq' ? z - 1 : z) & mask);
    }
  }
  const scalesGN = new Float32Array(G * N);
  for (let n = 0; n < N; n++) for (let g = 0; g < G; g++) scalesGN[g * N + n] = ql.scales[n * G + g]!;
  return { qweight, qzeros, scales: float32ToF16(scalesGN), gIdx: ql.gIdx.slice(), v1ZeroOverflow, qweightRows: rowsW, qzerosCols: colsZ };
}

/**
 * Unpacks GPTQ tensors written by any GPTQ tool (2, 3, 4 or 8 bits) into integer levels, scales, true zero points
 * and dequantized weights [N, K]. `scales` may be float16 bit patterns or float32 values, both [G, N]; without
 * `gIdx` the monotonic k // g is assumed, g = `shape.groupSize` (config.json's group_size; then G must be ⌈K/g⌉, the
 * last group maybe shorter) or, when not given, K / G (G must divide K: a shorter last group leaves g ambiguous).
 * Throws BAD_CHECKPOINT when the tensor sizes disagree with N, K, bits and the group size.
 */
export function unpackGptq(
  tensors: { qweight: Int32Array; qzeros: Int32Array; scales: Uint16Array | Float32Array; gIdx?: Int32Array },
  shape: { N: number; K: number; bits: number; format: GptqFormat; groupSize?: number },
): UnpackedGptq {
  const { N, K, bits, format } = shape;
  const { values, words } = checkBits(bits, 'read');
  const bad = (msg: string) => fail('BAD_CHECKPOINT', `GPTQ tensors for N=${N}, K=${K}, bits=${bits}: ${msg}`);
  if (K % values !== 0 || N % values !== 0) throw bad(`N and K must be multiples of ${values}`);
  const G = tensors.scales.length / N;
  const rowsW = (K / values) * words;
  const colsZ = (N / values) * words;
  if (!Number.isInteger(G) || G < 1) throw bad(`scales has ${tensors.scales.length} values, not a multiple of N`);
  const gs = shape.groupSize !== undefined && shape.groupSize > 0 ? Math.min(shape.groupSize, K) : null;
  if (gs !== null && Math.ceil(K / gs) !== G) throw bad(`${G} groups, but group size ${shape.groupSize} gives ⌈K/g⌉ = ${Math.ceil(K / gs)}`);
  if (tensors.qweight.length !== rowsW * N) throw bad(`qweight has ${tensors.qweight.length} values, expected ${rowsW * N}`);
  if (tensors.qzeros.length !== G * colsZ) throw bad(`qzeros has ${tensors.qzeros.length} values, expected ${G * colsZ}`);
  let gIdx: Int32Array;
  if (tensors.gIdx) {
    if (tensors.gIdx.length !== K) throw bad(`g_idx has ${tensors.gIdx.length} values, expected ${K}`);
    for (const g of tensors.gIdx) if (g < 0 || g >= G) throw bad(`g_idx value ${g} is outside 0..${G - 1}`);
    gIdx = tensors.gIdx.slice();
  } else {
    if (gs === null && K % G !== 0) throw bad(`no g_idx and ${G} groups do not divide K (give the group size)`);
    const g = gs ?? K / G;
    gIdx = Int32Array.from({ length: K }, (_, k) => Math.floor(k / g));
  }
  const mask = maxQ(bits);
  const q = new Uint8Array(N * K);
  for (let k = 0; k < K; k++) {
    const r = Math.floor(k / values);
    const i = k - r * values;
    for (let n = 0; n < N; n++) q[n * K + k] = getBits(tensors.qweight, r * words * N + n, N, i, bits, mask);
  }
  const zeros = new Uint8Array(N * G);
  for (let g = 0; g < G; g++) {
    for (let n = 0; n < N; n++) {
      const c = Math.floor(n / values);
      const zs = getBits(tensors.qzeros, g * colsZ + c * words, 1, n - c * values, bits, mask);
      zeros[n * G + g] = format === 'gptq' ? (zs + 1) & mask : zs;
    }
  }
  const sGN = tensors.scales instanceof Uint16Array ? toFloat32('F16', new Uint8Array(tensors.scales.buffer, tensors.scales.byteOffset, tensors.scales.byteLength)) : tensors.scales;
  const scales = new Float32Array(N * G);
  for (let g = 0; g < G; g++) for (let n = 0; n < N; n++) scales[n * G + g] = sGN[g * N + n]!;
  // Float32 weights only on demand: MatMulNBits re-lays the integer levels and never needs them.
  let dequantized: Float32Array | null = null;
  return {
    N,
    K,
    bits,
    groupSize: gs ?? K / G,
    q,
    scales,
    zeros,
    gIdx,
    get dequantized() {
      return (dequantized ??= dequantize(N, K, q, scales, zeros, gIdx));
    },
  };
}

/**
 * Re-lays a 4-bit quantized Linear (from {@link unpackGptq} or the quantizer) as `MatMulNBits` inputs with
 * `block_size` = `blockSize` (a power of two ≥ 16). Needs monotonic groups g_idx[k] = k // blockSize (no act-order
 * without static groups). Throws BAD_OPTION otherwise.
 * K need not be a multiple of blockSize: the last block is padded to blockSize (kBlocks = ⌈K/blockSize⌉, as
 * MatMulNBits lays B out). The kernel reads only K columns of A, and the padding holds the block's zero point, so
 * each padded weight dequantizes to exactly 0 as well: even a kernel that ran over the whole block would add nothing.
 */
export function toMatMulNBits(
  src: Pick<UnpackedGptq, 'N' | 'K' | 'bits' | 'q' | 'scales' | 'zeros' | 'gIdx'>,
  blockSize: number,
): MatMulNBitsTensors {
  const { N, K } = src;
  if (src.bits !== 4) throw fail('BAD_OPTION', `MatMulNBits export needs 4-bit weights, got ${src.bits} bits`);
  if (!Number.isInteger(blockSize) || blockSize < 16 || (blockSize & (blockSize - 1)) !== 0) {
    throw fail('BAD_OPTION', `MatMulNBits block size ${blockSize} must be a power of two ≥ 16`);
  }
  const kBlocks = Math.ceil(K / blockSize);
  const G = src.scales.length / N;
  if (G !== kBlocks) throw fail('BAD_OPTION', `MatMulNBits needs one group per ${blockSize} columns (${kBlocks} groups), the layer has ${G}`);
  for (let k = 0; k < K; k++) {
    if (src.gIdx[k] !== Math.floor(k / blockSize)) {
      throw fail('BAD_OPTION', `MatMulNBits needs g_idx[k] = k // ${blockSize}; column ${k} is in group ${src.gIdx[k]} (act-order without static groups)`);
    }
  }
  const half = blockSize / 2;
  const B = new Uint8Array(N * kBlocks * half);
  const Kp = kBlocks * blockSize;
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let k = 0; k < K; k++) {
      const kb = Math.floor(k / blockSize);
      const o = k - kb * blockSize;
      B[(n * kBlocks + kb) * half + (o >> 1)] |= (src.q[row + k]! & 0xf) << ((o & 1) * 4);
    }
    // Padding of a partial last block: the zero point, i.e. weight 0.
    const z = src.zeros[n * G + kBlocks - 1]! & 0xf;
    for (let k = K; k < Kp; k++) {
      const o = k - (kBlocks - 1) * blockSize;
      B[(n * kBlocks + kBlocks - 1) * half + (o >> 1)] |= z << ((o & 1) * 4);
    }
  }
  const zb = Math.ceil(kBlocks / 2);
  const zeroPoints = new Uint8Array(N * zb);
  for (let n = 0; n < N; n++) {
    for (let kb = 0; kb < kBlocks; kb++) zeroPoints[n * zb + (kb >> 1)] |= (src.zeros[n * G + kb]! & 0xf) << ((kb & 1) * 4);
  }
  return { N, K, blockSize, kBlocks, B, scales: Float32Array.from(src.scales), zeroPoints };
}
