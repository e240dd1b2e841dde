/**
 * Bit packing between a {@link QuantizedLinear} and (a) the GPTQ checkpoint tensors written by AutoGPTQ / GPTQModel
 * (`qweight`, `qzeros`, `scales`, `g_idx`), (b) onnxruntime's `com.microsoft::MatMulNBits` inputs.
 * Pure JavaScript integer work; no onnxruntime, no I/O.
 *
 * GPTQ layout (pack = 32 / bits values per int32, first value in the lowest bits):
 *   qweight [K/pack, N]: qweight[r, n] = Σ_j q[n, pack·r + j] << (bits·j)       (packed along K, transposed)
 *   qzeros  [G, N/pack]: qzeros[g, c]  = Σ_j zs[g, pack·c + j] << (bits·j)      (packed along N)
 *   scales  [G, N] float16;  g_idx [K] int32;  W[n, k] = scales[g, n] · (q[n, k] − z[g, n]) with g = g_idx[k]
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
}

/** Integer view of a GPTQ checkpoint's Linear, same layout as {@link QuantizedLinear}. */
export interface UnpackedGptq {
  N: number;
  K: number;
  bits: number;
  /** K / G. */
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

function packFactor(bits: number, allowed: number[], what: string): number {
  if (!allowed.includes(bits)) {
    throw what === 'write'
      ? fail('BAD_OPTION', `the GPTQ writer packs 4 or 8 bits; --bits ${bits} can be evaluated but not written`)
      : fail('UNSUPPORTED', `GPTQ checkpoints with bits=${bits} are not supported (only ${allowed.join(', ')})`);
  }
  return 32 / bits;
}

/**
 * Packs a quantized Linear into GPTQ checkpoint tensors (`format` 'gptq' = v1 with zero − 1, 'gptq_v2' = as is).
 * Throws BAD_OPTION for bit widths other than 4 and 8, UNSUPPORTED when K or N is not a multiple of 32/bits.
 */
export function packGptq(ql: QuantizedLinear, format: GptqFormat): PackedGptq {
  const { N, K, bits } = ql;
  const pack = packFactor(bits, [4, 8], 'write');
  if (K % pack !== 0) throw fail('UNSUPPORTED', `cannot pack a GPTQ layer with K=${K} input features: K must be a multiple of ${pack} for ${bits}-bit qweight`);
  if (N % pack !== 0) throw fail('UNSUPPORTED', `cannot pack a GPTQ layer with N=${N} output features: N must be a multiple of ${pack} for ${bits}-bit qzeros`);
  const G = ql.scales.length / N;
  const mask = maxQ(bits);
  const rowsW = K / pack;
  const qweight = new Int32Array(rowsW * N);
  for (let n = 0; n < N; n++) {
    const src = n * K;
    for (let r = 0; r < rowsW; r++) {
      let word = 0;
      for (let j = 0; j < pack; j++) word |= (ql.q[src + r * pack + j]! & mask) << (bits * j);
      qweight[r * N + n] = word;
    }
  }
  const colsZ = N / pack;
  const qzeros = new Int32Array(G * colsZ);
  let v1ZeroOverflow = 0;
  for (let g = 0; g < G; g++) {
    for (let c = 0; c < colsZ; c++) {
      let word = 0;
      for (let j = 0; j < pack; j++) {
        const z = ql.zeros[(c * pack + j) * G + g]!;
        if (format === 'gptq' && z === 0) v1ZeroOverflow++;
        word |= ((format === 'gptq' ? z - 1 : z) & mask) << (bits * j);
      }
      qzeros[g * colsZ + c] = word;
    }
  }
  const scalesGN = new Float32Array(G * N);
  for (let n = 0; n < N; n++) for (let g = 0; g < G; g++) scalesGN[g * N + n] = ql.scales[n * G + g]!;
  return { qweight, qzeros, scales: float32ToF16(scalesGN), gIdx: ql.gIdx.slice(), v1ZeroOverflow };
}

/**
 * Unpacks GPTQ tensors written by any GPTQ tool (2, 4 or 8 bits) into integer levels, scales, true zero points and
 * dequantized weights [N, K]. `scales` may be float16 bit patterns or float32 values, both [G, N]; without `gIdx`
 * the monotonic k // (K/G) is assumed. Throws BAD_CHECKPOINT when the tensor sizes disagree with N, K and bits.
 */
export function unpackGptq(
  tensors: { qweight: Int32Array; qzeros: Int32Array; scales: Uint16Array | Float32Array; gIdx?: Int32Array },
  shape: { N: number; K: number; bits: number; format: GptqFormat },
): UnpackedGptq {
  const { N, K, bits, format } = shape;
  const pack = packFactor(bits, [2, 4, 8], 'read');
  const bad = (msg: string) => fail('BAD_CHECKPOINT', `GPTQ tensors for N=${N}, K=${K}, bits=${bits}: ${msg}`);
  if (K % pack !== 0 || N % pack !== 0) throw bad(`N and K must be multiples of ${pack}`);
  const G = tensors.scales.length / N;
  if (!Number.isInteger(G) || G < 1) throw bad(`scales has ${tensors.scales.length} values, not a multiple of N`);
  if (tensors.qweight.length !== (K / pack) * N) throw bad(`qweight has ${tensors.qweight.length} values, expected ${(K / pack) * N}`);
  if (tensors.qzeros.length !== G * (N / pack)) throw bad(`qzeros has ${tensors.qzeros.length} values, expected ${G * (N / pack)}`);
  let gIdx: Int32Array;
  if (tensors.gIdx) {
    if (tensors.gIdx.length !== K) throw bad(`g_idx has ${tensors.gIdx.length} values, expected ${K}`);
    for (const g of tensors.gIdx) if (g < 0 || g >= G) throw bad(`g_idx value ${g} is outside 0..${G - 1}`);
    gIdx = tensors.gIdx.slice();
  } else {
    if (K % G !== 0) throw bad(`no g_idx and ${G} groups do not divide K`);
    gIdx = Int32Array.from({ length: K }, (_, k) => Math.floor(k / (K / G)));
  }
  const mask = maxQ(bits);
  const q = new Uint8Array(N * K);
  for (let k = 0; k < K; k++) {
    const row = Math.floor(k / pack) * N;
    const shift = bits * (k % pack);
    for (let n = 0; n < N; n++) q[n * K + k] = (tensors.qweight[row + n]! >>> shift) & mask;
  }
  const zeros = new Uint8Array(N * G);
  const colsZ = N / pack;
  for (let g = 0; g < G; g++) {
    for (let n = 0; n < N; n++) {
      const zs = (tensors.qzeros[g * colsZ + Math.floor(n / pack)]! >>> (bits * (n % pack))) & mask;
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
    groupSize: K / G,
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
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let k = 0; k < K; k++) {
      const kb = Math.floor(k / blockSize);
      const o = k - kb * blockSize;
      B[(n * kBlocks + kb) * half + (o >> 1)] |= (src.q[row + k]! & 0xf) << ((o & 1) * 4);
    }
  }
  const zb = Math.ceil(kBlocks / 2);
  const zeroPoints = new Uint8Array(N * zb);
  for (let n = 0; n < N; n++) {
    for (let kb = 0; kb < kBlocks; kb++) zeroPoints[n * zb + (kb >> 1)] |= (src.zeros[n * G + kb]! & 0xf) << ((kb & 1) * 4);
  }
  return { N, K, blockSize, kBlocks, B, scales: Float32Array.from(src.scales), zeroPoints };
}
