/**
 * GGML block quantization types as llama.cpp stores them (`ggml-common.h`), and their grids. Pure math, no I/O.
 *
 * A {@link BlockGrid} holds the parameters of one [N, K] matrix of a type: per row and block (32 or 256 columns)
 * the stored fp16 scales and 6/8-bit sub-block scales, fitted the way llama.cpp's reference quantizer fits them
 * (`quantize_row_*_ref` in `ggml-quants.c`; Q4_0/Q4_1/Q8_0 in the float32 arithmetic of the Python `gguf`
 * package, which writes the same bytes). Every element then has a grid of integer levels 0..maxq whose value is
 * fround(step · level + offset) — exactly what llama.cpp's `dequantize_row_*` computes — so a solver (RTN or GPTQ)
 * picks levels on the grid itself and the file holds exactly the weights it solved for.
 *
 * Layouts (little-endian, `d`/`dmin`/`m` fp16), blocks along a row:
 *   Q4_0 {d, qs[16]}: x = (q − 8)·d, qs[j] = q[j] | q[j+16] << 4          Q4_1 {d, m, qs[16]}: x = q·d + m
 *   Q5_0 {d, qh[4], qs[16]}: x = (q − 16)·d, bit 4 of q[j] in qh bit j      Q5_1 {d, m, qh[4], qs[16]}: x = q·d + m
 *   Q8_0 {d, qs[32] int8}: x = q·d
 *   Q4_K {d, dmin, scales[12], qs[128]}: 8 sub-blocks of 32, x = d·sc·q − dmin·m, 6-bit sc/m packed
 *   Q5_K {d, dmin, scales[12], qh[32], qs[128]}: as Q4_K with a 5th bit per value in qh
 *   Q6_K {ql[128], qh[64], scales[16] int8, d}: 16 sub-blocks of 16, x = d·sc·(q − 32)
 */
import { float32ToF16 } from '../../checkpoint/dtypes.js';
import { fail } from '../../errors.js';
import { fitK45Subs, fitQ6KSubs } from './wasm/kquants.js';

/** The GGML tensor types moe-quant writes and reads. */
export type GgmlType = 'F32' | 'F16' | 'BF16' | 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q8_0' | 'Q4_K' | 'Q5_K' | 'Q6_K';
/** The block-quantized ones. */
export type QuantType = Exclude<GgmlType, 'F32' | 'F16' | 'BF16'>;

interface TypeInfo {
  /** ggml_type enum value in the file. */
  id: number;
  /** Values per block. */
  blockLen: number;
  /** Bytes per block. */
  blockBytes: number;
}

export const GGML_TYPES: Record<GgmlType, TypeInfo> = {
  F32: { id: 0, blockLen: 1, blockBytes: 4 },
  F16: { id: 1, blockLen: 1, blockBytes: 2 },
  Q4_0: { id: 2, blockLen: 32, blockBytes: 18 },
  Q4_1: { id: 3, blockLen: 32, blockBytes: 20 },
  Q5_0: { id: 6, blockLen: 32, blockBytes: 22 },
  Q5_1: { id: 7, blockLen: 32, blockBytes: 24 },
  Q8_0: { id: 8, blockLen: 32, blockBytes: 34 },
  Q4_K: { id: 12, blockLen: 256, blockBytes: 144 },
  Q5_K: { id: 13, blockLen: 256, blockBytes: 176 },
  Q6_K: { id: 14, blockLen: 256, blockBytes: 210 },
  BF16: { id: 30, blockLen: 1, blockBytes: 2 },
};

export const GGML_TYPE_BY_ID = new Map<number, GgmlType>(Object.entries(GGML_TYPES).map(([k, v]) => [v.id, k as GgmlType]));

/** Bytes of a row of `rowLen` values. */
export function rowBytes(type: GgmlType, rowLen: number): number {
  const t = GGML_TYPES[type];
  if (rowLen % t.blockLen !== 0) throw fail('BAD_OPTION', `${type} needs a row length that is a multiple of ${t.blockLen} (got ${rowLen})`);
  return (rowLen / t.blockLen) * t.blockBytes;
}

// ---- scalar float helpers (float32 arithmetic as C does it) ----
const fr = Math.fround;
const f16Scratch = new Float32Array(1);
/** fp16 bit pattern of x (round to nearest even, like GGML_FP32_TO_FP16 on x86). */
export function toHalf(x: number): number {
  f16Scratch[0] = x;
  return float32ToF16(f16Scratch)[0]!;
}
/** Value of an fp16 bit pattern. */
export function fromHalf(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
/** ggml nearest_int: round half to even. */
function nearestInt(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
/** C roundf: half away from zero. */
const roundAway = (x: number) => Math.sign(x) * Math.floor(Math.abs(x) + 0.5);
const clamp = (v: number, lo: number, hi: number) => (v < lo ? lo : v > hi ? hi : v);

interface Spec {
  /** Columns whose parameters are fitted together (one GGML block). */
  blockLen: number;
  /** Columns sharing one step/offset. */
  subLen: number;
  maxq: number;
}
const SPECS: Record<QuantType, Spec> = {
  Q4_0: { blockLen: 32, subLen: 32, maxq: 15 },
  Q4_1: { blockLen: 32, subLen: 32, maxq: 15 },
  Q5_0: { blockLen: 32, subLen: 32, maxq: 31 },
  Q5_1: { blockLen: 32, subLen: 32, maxq: 31 },
  Q8_0: { blockLen: 32, subLen: 32, maxq: 255 },
  Q4_K: { blockLen: 256, subLen: 32, maxq: 15 },
  Q5_K: { blockLen: 256, subLen: 32, maxq: 31 },
  Q6_K: { blockLen: 256, subLen: 16, maxq: 63 },
};

export function isQuantType(t: GgmlType): t is QuantType {
  return t in SPECS;
}

/**
 * The grid of one [N, K] matrix of a block type: stored parameters per (row, block) and sub-block, and per
 * (row, sub-block) the value step / offset and the helper numbers of the reference level rule.
 */
export class BlockGrid {
  readonly blockLen: number;
  readonly subLen: number;
  readonly maxq: number;
  /** fp16 bits of d per (row, block). */
  readonly d: Uint16Array;
  /** fp16 bits of dmin (K-quants) or m (Q4_1/Q5_1) per (row, block). */
  readonly m: Uint16Array;
  /** Quantized sub-block scales (K-quants; Q6_K as int8) and mins (Q4_K/Q5_K) per (row, sub-block). */
  readonly sc: Int16Array;
  readonly mq: Uint8Array;
  /** Value of level l in sub-block (n, j): fround(step·l + offset). */
  readonly step: Float64Array;
  readonly offset: Float64Array;
  /** Reference level rule helpers: the float32 1/d (Q4_0/Q4_1/Q5_x/Q8_0) and the float32 min (Q4_1/Q5_1). */
  private readonly inv: Float64Array;
  private readonly min: Float64Array;
  private readonly subsPerRow: number;
  private readonly blocksPerRow: number;

  constructor(
    readonly type: QuantType,
    readonly N: number,
    readonly K: number,
    /** K-quant scale searches in WebAssembly (wasm/kquants.wat; bit-identical); false: the JavaScript reference. */
    private readonly wasm = true,
  ) {
    const s = SPECS[type];
    if (K % s.blockLen !== 0) throw fail('BAD_OPTION', `${type} needs rows of a multiple of ${s.blockLen} values (K = ${K})`);
    this.blockLen = s.blockLen;
    this.subLen = s.subLen;
    this.maxq = s.maxq;
    this.blocksPerRow = K / s.blockLen;
    this.subsPerRow = K / s.subLen;
    this.d = new Uint16Array(N * this.blocksPerRow);
    this.m = new Uint16Array(N * this.blocksPerRow);
    this.sc = new Int16Array(N * this.subsPerRow);
    this.mq = new Uint8Array(N * this.subsPerRow);
    this.step = new Float64Array(N * this.subsPerRow);
    this.offset = new Float64Array(N * this.subsPerRow);
    this.inv = new Float64Array(N * this.subsPerRow);
    this.min = new Float64Array(N * this.subsPerRow);
  }

  /**
   * Fits block `b` of every row from the current values: element (n, k) of the block, k = b·blockLen + i, is
   * `src[n*rowStride + k*colStride]` (rounded to float32 first, as the reference quantizes float32 rows).
   */
  fit(src: ArrayLike<number>, rowStride: number, colStride: number, b: number): void {
    const x = new Float32Array(this.blockLen);
    const k0 = b * this.blockLen;
    for (let n = 0; n < this.N; n++) {
      for (let i = 0, o = n * rowStride + k0 * colStride; i < this.blockLen; i++, o += colStride) x[i] = src[o]!;
      this.fitBlock(n, b, x);
    }
  }

  /** Reference parameters of block b of row n from its float32 values x. */
  fitBlock(n: number, b: number, x: Float32Array): void {
    const bi = n * this.blocksPerRow + b;
    const sub0 = n * this.subsPerRow + (b * this.blockLen) / this.subLen;
    switch (this.type) {
      case 'Q4_0':
      case 'Q5_0': {
        const levels = this.type === 'Q4_0' ? 8 : 16;
        let amax = 0;
        let max = 0;
        for (const v of x) if (amax < Math.abs(v)) (amax = Math.abs(v)), (max = v);
        const d = fr(max / -levels);
        this.d[bi] = toHalf(d);
        const s = fromHalf(this.d[bi]!);
        this.setSub(sub0, s, -levels * s, d ? fr(1 / d) : 0, 0);
        break;
      }
      case 'Q4_1':
      case 'Q5_1': {
        let min = Infinity;
        let max = -Infinity;
        for (const v of x) (min = v < min ? v : min), (max = v > max ? v : max);
        const d = fr(fr(max - min) / this.maxq);
        this.d[bi] = toHalf(d);
        this.m[bi] = toHalf(min);
        this.setSub(sub0, fromHalf(this.d[bi]!), fromHalf(this.m[bi]!), d ? fr(1 / d) : 0, min);
        break;
      }
      case 'Q8_0': {
        let amax = 0;
        for (const v of x) amax = Math.max(amax, Math.abs(v));
        const d = fr(amax / 127);
        this.d[bi] = toHalf(d);
        const s = fromHalf(this.d[bi]!);
        this.setSub(sub0, s, -128 * s, d ? fr(1 / d) : 0, 0);
        break;
      }
      case 'Q4_K':
      case 'Q5_K':
        this.fitK45(n, bi, sub0, x);
        break;
      case 'Q6_K':
        this.fitQ6K(bi, sub0, x);
        break;
    }
  }

  private setSub(j: number, step: number, offset: number, inv: number, min: number): void {
    this.step[j] = step;
    this.offset[j] = offset;
    this.inv[j] = inv;
    this.min[j] = min;
  }

  /** quantize_row_q4_K_ref / quantize_row_q5_K_ref. */
  private fitK45(_n: number, bi: number, sub0: number, x: Float32Array): void {
    const q5 = this.type === 'Q5_K';
    const scales = new Float64Array(8);
    const mins = new Float64Array(8);
    if (this.wasm) fitK45Subs(x, q5, scales, mins);
    else {
      const w = new Float32Array(32);
      for (let j = 0; j < 8; j++) {
        const xs = x.subarray(32 * j, 32 * j + 32);
        let sumX2 = 0;
        for (const v of xs) sumX2 = fr(sumX2 + fr(v * v));
        const avX = fr(Math.sqrt(fr(sumX2 / 32)));
        for (let l = 0; l < 32; l++) w[l] = fr(avX + Math.abs(xs[l]!));
        const r = q5 ? makeQkx2(xs, w, 31, -0.5, 0.1, 15) : makeQkx2(xs, w, 15, -1, 0.1, 20);
        scales[j] = r.scale;
        mins[j] = r.min;
      }
    }
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 8; j++) {
      if (scales[j]! > maxScale) maxScale = scales[j]!;
      if (mins[j]! > maxMin) maxMin = mins[j]!;
    }
    const invScale = maxScale > 0 ? fr(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? fr(63 / maxMin) : 0;
    this.d[bi] = toHalf(fr(maxScale / 63));
    this.m[bi] = toHalf(fr(maxMin / 63));
    const d = fromHalf(this.d[bi]!);
    const dmin = fromHalf(this.m[bi]!);
    for (let j = 0; j < 8; j++) {
      const ls = Math.min(63, nearestInt(fr(invScale * scales[j]!)));
      const lm = Math.min(63, nearestInt(fr(invMin * mins[j]!)));
      this.sc[sub0 + j] = ls;
      this.mq[sub0 + j] = lm;
      this.setSub(sub0 + j, fr(d * ls), -fr(dmin * lm), 0, 0);
    }
  }

  /** quantize_row_q6_K_ref. */
  private fitQ6K(bi: number, sub0: number, x: Float32Array): void {
    const scales = new Float64Array(16);
    if (this.wasm) fitQ6KSubs(x, scales);
    else for (let j = 0; j < 16; j++) scales[j] = makeQx(x.subarray(16 * j, 16 * j + 16), 32);
    let maxScale = 0;
    let maxAbs = 0;
    for (let j = 0; j < 16; j++) {
      const s = scales[j]!;
      if (Math.abs(s) > maxAbs) (maxAbs = Math.abs(s)), (maxScale = s);
    }
    if (maxAbs < 1e-15) {
      this.d[bi] = 0;
      for (let j = 0; j < 16; j++) (this.sc[sub0 + j] = 0), this.setSub(sub0 + j, 0, 0, 0, 0);
      return;
    }
    const iscale = fr(-128 / maxScale);
    this.d[bi] = toHalf(fr(1 / iscale));
    const d = fromHalf(this.d[bi]!);
    for (let j = 0; j < 16; j++) {
      const sc = Math.min(127, nearestInt(fr(iscale * scales[j]!)));
      this.sc[sub0 + j] = sc;
      const step = fr(d * sc);
      this.setSub(sub0 + j, step, -32 * step, 0, 0);
    }
  }

  /** Sub-block index of element (n, k). */
  sub(n: number, k: number): number {
    return n * this.subsPerRow + Math.floor(k / this.subLen);
  }

  /** The level the reference quantizer gives value w of element (n, k), clamped to 0..maxq. */
  level(w: number, n: number, k: number): number {
    const j = this.sub(n, k);
    const x = fr(w);
    switch (this.type) {
      case 'Q4_0':
        return clamp(Math.trunc(fr(fr(x * this.inv[j]!) + 8.5)), 0, 15);
      case 'Q5_0':
        return clamp(Math.trunc(fr(fr(x * this.inv[j]!) + 16.5)), 0, 31);
      case 'Q4_1':
      case 'Q5_1':
        return clamp(Math.trunc(fr(fr(fr(x - this.min[j]!) * this.inv[j]!) + 0.5)), 0, this.maxq);
      case 'Q8_0':
        return clamp(roundAway(fr(x * this.inv[j]!)), -128, 127) + 128;
      case 'Q4_K':
      case 'Q5_K': {
        const d = this.step[j]!;
        if (!d) return 0;
        return clamp(nearestInt(fr(fr(x - this.offset[j]!) / d)), 0, this.maxq);
      }
      case 'Q6_K': {
        const d = this.step[j]!;
        if (!d) return 32;
        return clamp(nearestInt(fr(x / d)), -32, 31) + 32;
      }
    }
  }

  /** Value of level l at element (n, k), as llama.cpp dequantizes it (float32). */
  value(l: number, n: number, k: number): number {
    const j = this.sub(n, k);
    return fr(this.step[j]! * l + this.offset[j]!);
  }

  /** Dequantized [N, K] of the levels. */
  dequantize(levels: Uint8Array): Float32Array {
    const { N, K } = this;
    const out = new Float32Array(N * K);
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const j = n * this.subsPerRow + Math.floor(k / this.subLen);
        out[n * K + k] = this.step[j]! * levels[n * K + k]! + this.offset[j]!;
      }
    }
    return out;
  }

  /** The GGML bytes of the matrix (rows of blocks) for `levels` [N, K]. */
  pack(levels: Uint8Array): Uint8Array {
    const { N, K, type } = this;
    const { blockBytes } = GGML_TYPES[type];
    const out = new Uint8Array(N * this.blocksPerRow * blockBytes);
    const dv = new DataView(out.buffer);
    for (let n = 0; n < N; n++) {
      for (let b = 0; b < this.blocksPerRow; b++) {
        const bi = n * this.blocksPerRow + b;
        const o = bi * blockBytes;
        const L = levels.subarray(n * K + b * this.blockLen, n * K + (b + 1) * this.blockLen);
        const sub0 = n * this.subsPerRow + (b * this.blockLen) / this.subLen;
        packBlock(type, out, dv, o, L, this.d[bi]!, this.m[bi]!, this.sc.subarray(sub0), this.mq.subarray(sub0));
      }
    }
    return out;
  }
}

function packNibbles(out: Uint8Array, o: number, L: Uint8Array, count: number): void {
  for (let j = 0; j < count; j++) out[o + j] = (L[j]! & 15) | ((L[j + count]! & 15) << 4);
}

function packK4Scales(out: Uint8Array, o: number, sc: Int16Array, mq: Uint8Array): void {
  for (let j = 0; j < 8; j++) {
    const ls = sc[j]!;
    const lm = mq[j]!;
    if (j < 4) {
      out[o + j] = ls;
      out[o + j + 4] = lm;
    } else {
      out[o + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
      out[o + j - 4]! |= (ls >> 4) << 6;
      out[o + j]! |= (lm >> 4) << 6;
    }
  }
}

function packBlock(type: QuantType, out: Uint8Array, dv: DataView, o: number, L: Uint8Array, d: number, m: number, sc: Int16Array, mq: Uint8Array): void {
  switch (type) {
    case 'Q4_0':
      dv.setUint16(o, d, true);
      packNibbles(out, o + 2, L, 16);
      return;
    case 'Q4_1':
      dv.setUint16(o, d, true);
      dv.setUint16(o + 2, m, true);
      packNibbles(out, o + 4, L, 16);
      return;
    case 'Q5_0':
    case 'Q5_1': {
      const q51 = type === 'Q5_1';
      dv.setUint16(o, d, true);
      if (q51) dv.setUint16(o + 2, m, true);
      const h = o + (q51 ? 4 : 2);
      let qh = 0;
      for (let j = 0; j < 32; j++) qh |= ((L[j]! >> 4) & 1) << j;
      dv.setUint32(h, qh >>> 0, true);
      packNibbles(out, h + 4, L, 16);
      return;
    }
    case 'Q8_0':
      dv.setUint16(o, d, true);
      for (let j = 0; j < 32; j++) out[o + 2 + j] = (L[j]! - 128) & 0xff;
      return;
    case 'Q4_K':
    case 'Q5_K': {
      dv.setUint16(o, d, true);
      dv.setUint16(o + 2, m, true);
      packK4Scales(out, o + 4, sc, mq);
      const q5 = type === 'Q5_K';
      const qh = o + 16;
      const qs = q5 ? o + 48 : o + 16;
      for (let c = 0; c < 4; c++) {
        for (let l = 0; l < 32; l++) {
          const a = L[64 * c + l]!;
          const b = L[64 * c + 32 + l]!;
          out[qs + 32 * c + l] = (a & 15) | ((b & 15) << 4);
          if (q5) out[qh + l]! |= ((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1));
        }
      }
      return;
    }
    case 'Q6_K': {
      const ql = o;
      const qh = o + 128;
      for (let h = 0; h < 2; h++) {
        const j = 128 * h;
        for (let l = 0; l < 32; l++) {
          const q1 = L[j + l]!;
          const q2 = L[j + l + 32]!;
          const q3 = L[j + l + 64]!;
          const q4 = L[j + l + 96]!;
          out[ql + 64 * h + l] = (q1 & 15) | ((q3 & 15) << 4);
          out[ql + 64 * h + l + 32] = (q2 & 15) | ((q4 & 15) << 4);
          out[qh + 32 * h + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
      }
      for (let j = 0; j < 16; j++) out[o + 192 + j] = sc[j]! & 0xff;
      dv.setUint16(o + 208, d, true);
      return;
    }
  }
}

/** make_qkx2_quants (use_mad false) in float32 arithmetic: returns scale and the (non-negative) min. */
function makeQkx2(x: Float32Array, w: Float32Array, nmax: number, rmin: number, rdelta: number, nstep: number): { scale: number; min: number } {
  const n = x.length;
  let min = x[0]!;
  let max = x[0]!;
  let sumW = w[0]!;
  let sumX = fr(sumW * x[0]!);
  for (let i = 1; i < n; i++) {
    if (x[i]! < min) min = x[i]!;
    if (x[i]! > max) max = x[i]!;
    sumW = fr(sumW + w[i]!);
    sumX = fr(sumX + fr(w[i]! * x[i]!));
  }
  if (min > 0) min = 0;
  if (max === min) return { scale: 0, min: -min };
  const range = fr(max - min);
  let iscale = fr(nmax / range);
  let scale = fr(1 / iscale);
  let best = 0;
  for (let i = 0; i < n; i++) {
    const l = clamp(nearestInt(fr(iscale * fr(x[i]! - min))), 0, nmax);
    const diff = fr(fr(fr(scale * l) + min) - x[i]!);
    best = fr(best + fr(w[i]! * fr(diff * diff)));
  }
  const laux = new Uint8Array(n);
  for (let is = 0; is <= nstep; is++) {
    iscale = fr(fr(fr(rmin + fr(rdelta * is)) + nmax) / range);
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = clamp(nearestInt(fr(iscale * fr(x[i]! - min))), 0, nmax);
      laux[i] = l;
      const wl = fr(w[i]! * l);
      sumL = fr(sumL + wl);
      sumL2 = fr(sumL2 + fr(wl * l));
      sumXL = fr(sumXL + fr(wl * x[i]!));
    }
    const D = fr(fr(sumW * sumL2) - fr(sumL * sumL));
    if (D > 0) {
      let thisScale = fr(fr(fr(sumW * sumXL) - fr(sumX * sumL)) / D);
      let thisMin = fr(fr(fr(sumL2 * sumX) - fr(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = fr(sumXL / sumL2);
      }
      let err = 0;
      for (let i = 0; i < n; i++) {
        const diff = fr(fr(fr(thisScale * laux[i]!) + thisMin) - x[i]!);
        err = fr(err + fr(w[i]! * fr(diff * diff)));
      }
      if (err < best) {
        best = err;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return { scale, min: -min };
}

/** make_qx_quants with rmse_type 1 and no importance weights, float32 arithmetic: returns the scale. */
function makeQx(x: Float32Array, nmax: number): number {
  let max = 0;
  let amax = 0;
  for (const v of x) if (Math.abs(v) > amax) (amax = Math.abs(v)), (max = v);
  if (amax < 1e-15) return 0;
  const sums = (iscale: number) => {
    let sumlx = 0;
    let suml2 = 0;
    for (const v of x) {
      const l = clamp(nearestInt(fr(iscale * v)), -nmax, nmax - 1);
      const w = fr(v * v);
      sumlx = fr(sumlx + fr(fr(w * v) * l));
      suml2 = fr(suml2 + fr(fr(w * l) * l));
    }
    return { sumlx, suml2 };
  };
  let { sumlx, suml2 } = sums(fr(-nmax / max));
  let scale = suml2 ? fr(sumlx / suml2) : 0;
  let best = fr(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    const r = sums(fr(fr(-fr(nmax + fr(0.1 * is))) / max));
    if (r.suml2 > 0 && fr(r.sumlx * r.sumlx) > fr(best * r.suml2)) {
      scale = fr(r.sumlx / r.suml2);
      best = fr(scale * r.sumlx);
    }
  }
  return scale;
}

/**
 * Round-to-nearest on the grid of `type` as llama.cpp's reference quantizer (and the Python `gguf` package) does
 * it: parameters of each block from its own values, each value to the level the reference rounding gives.
 */
export function rtnGrid(W: Float32Array, N: number, K: number, type: QuantType, wasm = true): { grid: BlockGrid; levels: Uint8Array; dequantized: Float32Array } {
  const grid = new BlockGrid(type, N, K, wasm);
  for (let b = 0; b < K / grid.blockLen; b++) grid.fit(W, K, 1, b);
  const levels = new Uint8Array(N * K);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) levels[n * K + k] = grid.level(W[n * K + k]!, n, k);
  return { grid, levels, dequantized: grid.dequantize(levels) };
}

/** Dequantize `rows` rows of `rowLen` values of a GGML tensor's bytes (any type above) to float32. */
export function dequantizeRows(type: GgmlType, bytes: Uint8Array, rows: number, rowLen: number): Float32Array {
  const out = new Float32Array(rows * rowLen);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = rows * rowLen;
  if (type === 'F32') {
    for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
    return out;
  }
  if (type === 'F16') {
    for (let i = 0; i < n; i++) out[i] = fromHalf(dv.getUint16(2 * i, true));
    return out;
  }
  if (type === 'BF16') {
    const f = new DataView(new ArrayBuffer(4));
    for (let i = 0; i < n; i++) (f.setUint32(0, dv.getUint16(2 * i, true) << 16), (out[i] = f.getFloat32(0)));
    return out;
  }
  const { blockLen, blockBytes } = GGML_TYPES[type];
  const blocks = n / blockLen;
  const L = new Uint8Array(blockLen);
  for (let bi = 0; bi < blocks; bi++) {
    const o = bi * blockBytes;
    const y = out.subarray(bi * blockLen, (bi + 1) * blockLen);
    dequantizeBlock(type, bytes, dv, o, L, y);
  }
  return out;
}

function unpackNibbles(bytes: Uint8Array, o: number, L: Uint8Array, count: number): void {
  for (let j = 0; j < count; j++) {
    L[j] = bytes[o + j]! & 15;
    L[j + count] = bytes[o + j]! >> 4;
  }
}

function k4Scale(s: Uint8Array, o: number, j: number): [number, number] {
  if (j < 4) return [s[o + j]! & 63, s[o + j + 4]! & 63];
  return [(s[o + j + 4]! & 0xf) | ((s[o + j - 4]! >> 6) << 4), (s[o + j + 4]! >> 4) | ((s[o + j]! >> 6) << 4)];
}

function dequantizeBlock(type: QuantType, b: Uint8Array, dv: DataView, o: number, L: Uint8Array, y: Float32Array): void {
  const d = fromHalf(dv.getUint16(o, true));
  switch (type) {
    case 'Q4_0':
      unpackNibbles(b, o + 2, L, 16);
      for (let j = 0; j < 32; j++) y[j] = (L[j]! - 8) * d;
      return;
    case 'Q4_1': {
      const m = fromHalf(dv.getUint16(o + 2, true));
      unpackNibbles(b, o + 4, L, 16);
      for (let j = 0; j < 32; j++) y[j] = L[j]! * d + m;
      return;
    }
    case 'Q5_0':
    case 'Q5_1': {
      const q51 = type === 'Q5_1';
      const m = q51 ? fromHalf(dv.getUint16(o + 2, true)) : 0;
      const h = o + (q51 ? 4 : 2);
      const qh = dv.getUint32(h, true);
      unpackNibbles(b, h + 4, L, 16);
      for (let j = 0; j < 32; j++) {
        const q = L[j]! | (((qh >>> j) & 1) << 4);
        y[j] = q51 ? q * d + m : (q - 16) * d;
      }
      return;
    }
    case 'Q8_0':
      for (let j = 0; j < 32; j++) y[j] = ((b[o + 2 + j]! << 24) >> 24) * d;
      return;
    case 'Q4_K':
    case 'Q5_K': {
      const dmin = fromHalf(dv.getUint16(o + 2, true));
      const q5 = type === 'Q5_K';
      const qs = q5 ? o + 48 : o + 16;
      for (let c = 0; c < 4; c++) {
        const [s1, m1] = k4Scale(b, o + 4, 2 * c);
        const [s2, m2] = k4Scale(b, o + 4, 2 * c + 1);
        const d1 = fr(d * s1);
        const dm1 = fr(dmin * m1);
        const d2 = fr(d * s2);
        const dm2 = fr(dmin * m2);
        for (let l = 0; l < 32; l++) {
          const q = b[qs + 32 * c + l]!;
          const hi = q5 ? b[o + 16 + l]! : 0;
          y[64 * c + l] = d1 * ((q & 15) | (((hi >> (2 * c)) & 1) << 4)) - dm1;
          y[64 * c + 32 + l] = d2 * ((q >> 4) | (((hi >> (2 * c + 1)) & 1) << 4)) - dm2;
        }
      }
      return;
    }
    case 'Q6_K': {
      const dd = fromHalf(dv.getUint16(o + 208, true));
      for (let h = 0; h < 2; h++) {
        const ql = o + 64 * h;
        const qh = o + 128 + 32 * h;
        for (let l = 0; l < 32; l++) {
          const is = Math.floor(l / 16);
          const sc = (k: number) => fr(dd * ((b[o + 192 + 8 * h + is + k]! << 24) >> 24));
          const hb = b[qh + l]!;
          y[128 * h + l] = sc(0) * (((b[ql + l]! & 15) | ((hb & 3) << 4)) - 32);
          y[128 * h + l + 32] = sc(2) * (((b[ql + l + 32]! & 15) | (((hb >> 2) & 3) << 4)) - 32);
          y[128 * h + l + 64] = sc(4) * (((b[ql + l]! >> 4) | (((hb >> 4) & 3) << 4)) - 32);
          y[128 * h + l + 96] = sc(6) * (((b[ql + l + 32]! >> 4) | (((hb >> 6) & 3) << 4)) - 32);
        }
      }
      return;
    }
  }
}

/** Float32 or float16 bytes of a float32 matrix. */
export function floatBytes(type: 'F32' | 'F16', data: Float32Array): Uint8Array {
  if (type === 'F32') return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  const h = float32ToF16(data);
  return new Uint8Array(h.buffer);
}
