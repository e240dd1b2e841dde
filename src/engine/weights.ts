/**
 * Float32 weights for the engine, read one tensor at a time from the checkpoint. When the whole model fits in
 * `cacheBytes` the tensors stay resident across batches; otherwise each layer's tensors are released after use, so
 * peak memory is one layer's weights plus activations, whatever the number of layers.
 * `overrides` replace checkpoint tensors (e.g. dequantized 4-bit weights) without touching the files.
 */
import type { ExpectedTensor } from '../architectures/shapes.js';
import type { TensorStore } from './model.js';
import { int32Of } from '../checkpoint/dtypes.js';
import { toMatMulNBits, unpackGptq, type MatMulNBitsTensors } from '../quantization/pack.js';
import type { GptqConfig } from './model.js';

export interface WeightSource {
  get(name: string): Float32Array;
  shape(name: string): number[];
  /** Rows [start, start+count) of a 2-D tensor (embedding lookups). */
  rows(name: string, start: number, count: number): Float32Array;
}

export class WeightStore implements WeightSource {
  private readonly cache = new Map<string, Float32Array>();
  readonly resident: boolean;
  /**
   * Bytes a resident copy of the model holds: float32 tensors, and 4-bit linears that run on MatMulNBits at their
   * packed size (~1/8), so a GPTQ checkpoint stays resident (and gets parallel eval workers) by what it really takes.
   */
  readonly residentBytes: number;
  readonly overrides = new Map<string, Float32Array>();
  /**
   * Overrides kept outside memory (quantize's dequantized experts in a scratch file): read on get() into a reused
   * buffer and held until release() — also when resident — so only the expert chunk in use is in memory.
   */
  private readonly spilled = new Map<string, (into: Float32Array) => Float32Array>();
  private readonly spilledCache = new Map<string, Float32Array>();

  private readonly shapes = new Map<string, number[]>();
  private readonly nbitsCache = new Map<string, MatMulNBitsTensors>();
  private readonly blockSizes = new Map<string, number | null>();

  /**
   * `packed`: linears stored in GPTQ form (`<prefix>.qweight` …); `get(<prefix>.weight)` dequantizes them to float32
   * [N, K] on load, so every graph runs unchanged on GPTQ checkpoints (ours and other tools').
   * `useNBits`: run eligible packed weights on onnxruntime's MatMulNBits (4-bit, g_idx = k // group, power-of-two
   * group) instead of dequantizing them.
   */
  constructor(
    private readonly checkpoint: TensorStore,
    expected: ExpectedTensor[],
    cacheBytes = 2 ** 31,
    private readonly gptq: GptqConfig | null = null,
    private readonly packed = new Map<string, { prefix: string; N: number; K: number }>(),
    readonly useNBits = true,
  ) {
    for (const t of expected) this.shapes.set(t.name, t.shape);
    this.residentBytes = expected.reduce((sum, t) => {
      const n = t.shape.reduce((a, b) => a * b, 1);
      const block = this.nbitsBlockSize(t.name);
      return sum + (block === null ? n * 4 : n / 2 + (n / block) * 4.5); // B nibbles + float32 scales + zero points
    }, 0);
    this.resident = this.residentBytes <= cacheBytes;
  }

  /** MatMulNBits block size for a packed weight that can run on the 4-bit kernel, else null (use float32). */
  nbitsBlockSize(name: string): number | null {
    if (!this.useNBits || this.hasOverride(name)) return null;
    const hit = this.blockSizes.get(name);
    if (hit !== undefined) return hit;
    let block: number | null = null;
    const p = this.packed.get(name);
    const q = this.gptq;
    if (p && q && q.bits === 4) {
      const g = q.groupSize > 0 ? q.groupSize : p.K;
      if (g >= 16 && (g & (g - 1)) === 0) {
        const ids = this.checkpoint.has(`${p.prefix}.g_idx`) ? int32Of(this.checkpoint.readBytes(`${p.prefix}.g_idx`)) : null;
        if (!ids || ids.every((v, k) => v === Math.floor(k / g))) block = g;
      }
    }
    this.blockSizes.set(name, block);
    return block;
  }

  /** MatMulNBits inputs of a packed weight (see nbitsBlockSize). */
  nbits(name: string): MatMulNBitsTensors {
    const hit = this.nbitsCache.get(name);
    if (hit) return hit;
    const out = toMatMulNBits(this.unpack(name), this.nbitsBlockSize(name)!);
    // Like float tensors: kept for good when resident, until release() when streaming (not rebuilt per batch).
    this.nbitsCache.set(name, out);
    return out;
  }

  private readPacked(name: string): Float32Array {
    return this.unpack(name).dequantized;
  }

  private unpack(name: string) {
    const { prefix, N, K } = this.packed.get(name)!;
    const q = this.gptq!;
    // Dtypes were checked by openModel: integer tensors are I32; scales (F16, BF16 or F32) convert exactly to float32.
    const i32 = (suffix: string) => int32Of(this.checkpoint.readBytes(`${prefix}.${suffix}`));
    const groupSize = q.groupSize > 0 ? q.groupSize : K;
    const gIdx = this.checkpoint.has(`${prefix}.g_idx`) ? i32('g_idx') : Int32Array.from({ length: K }, (_, k) => Math.floor(k / groupSize));
    return unpackGptq(
      { qweight: i32('qweight'), qzeros: i32('qzeros'), scales: this.checkpoint.readFloat32(`${prefix}.scales`), gIdx },
      { N, K, bits: q.bits, format: q.format, groupSize },
    );
  }

  /** Streaming mode: released float32 buffers by length, reused by the next tensor of that size (no GC wait). */
  private readonly free = new Map<number, Float32Array[]>();

  /** Replace `name` by data that `read` fills in (a buffer of the tensor's length) whenever it is needed. */
  setSpilledOverride(name: string, read: (into: Float32Array) => Float32Array): void {
    this.overrides.delete(name);
    this.spilledCache.delete(name);
    this.spilled.set(name, read);
  }

  hasOverride(name: string): boolean {
    return this.overrides.has(name) || this.spilled.has(name);
  }

  /** Drop an override (in memory or spilled): `name` reads from the checkpoint again. */
  deleteOverride(name: string): void {
    this.overrides.delete(name);
    this.spilled.delete(name);
    this.spilledCache.delete(name);
  }

  get(name: string): Float32Array {
    const o = this.overrides.get(name) ?? this.spilledCache.get(name);
    if (o) return o;
    const read = this.spilled.get(name);
    if (read) {
      const n = this.shape(name).reduce((a, b) => a * b, 1);
      const data = read(this.free.get(n)?.pop() ?? new Float32Array(n));
      this.spilledCache.set(name, data);
      return data;
    }
    const hit = this.cache.get(name);
    if (hit) return hit;
    let data: Float32Array;
    if (this.packed.has(name)) data = this.readPacked(name);
    else if (this.resident) data = this.checkpoint.readFloat32(name);
    else {
      const n = this.checkpoint.info(name).numel;
      data = this.checkpoint.readFloat32Into(name, this.free.get(n)?.pop() ?? new Float32Array(n));
    }
    // Resident: kept for good. Streaming: kept until release() (end of the expert chunk or of the layer).
    this.cache.set(name, data);
    return data;
  }

  rows(name: string, start: number, count: number): Float32Array {
    const cached = this.spilled.has(name) ? this.get(name) : (this.overrides.get(name) ?? this.cache.get(name));
    if (cached) {
      const width = cached.length / this.shape(name)[0]!;
      return cached.subarray(start * width, (start + count) * width);
    }
    return this.checkpoint.readRowsFloat32(name, start, count);
  }

  /** Shape of a tensor as stored in the checkpoint. */
  shape(name: string): number[] {
    return this.shapes.get(name) ?? this.checkpoint.info(name).shape;
  }

  /**
   * Give back tensors: their buffers are reused for later reads. Resident stores keep checkpoint tensors and give
   * back only spilled overrides.
   */
  release(names: Iterable<string>): void {
    for (const n of names) {
      const s = this.spilledCache.get(n);
      if (s) {
        this.spilledCache.delete(n);
        const list = this.free.get(s.length) ?? [];
        list.push(s);
        this.free.set(s.length, list);
      }
      if (this.resident) continue;
      const data = this.cache.get(n);
      if (data && !this.packed.has(n)) {
        const list = this.free.get(data.length) ?? [];
        list.push(data);
        this.free.set(data.length, list);
      }
      this.cache.delete(n);
      this.nbitsCache.delete(n);
    }
  }
}
