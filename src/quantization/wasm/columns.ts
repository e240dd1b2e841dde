/**
 * The GPTQ column step in WebAssembly (columns.wat): a workspace holds one lazy-batch block's arrays in the module's
 * memory — W1 and Err1 (also read by onnxruntime between sub-blocks), the block's levels, its square of U, the
 * group parameters — so the kernels work in place. One workspace per solve in flight (solves in one thread
 * interleave at their onnxruntime awaits); released workspaces are reused, memory and all.
 */
import { COLUMNS_WASM } from './columns-wasm.js';

interface Kernels {
  memory: WebAssembly.Memory;
  quantize(w: number, err: number, q: number, scale: number, zero: number, count: number, d: number, maxq: number, err32: number, loss: number): number;
  update(dst: number, e: number, u: number, rows: number, count: number, stride: number): void;
}

let compiled: WebAssembly.Module | null = null;
const idle: ColumnWorkspace[] = [];

/** Views of one block's arrays in a workspace's memory (valid until its next layout()). */
export interface BlockViews {
  /** The block's columns of W as rows [B, N], float64. */
  W1: Float64Array;
  /** err of every column [B, N] (float32 or float64, the Gemm element type). */
  Err1: Float32Array | Float64Array;
  /** Levels of the block's columns [B, N]. */
  q: Uint8Array;
  /** U[i1 + i, i1 + j] at [i·B + j], float64. */
  U: Float64Array;
  /** Scales and zero points of every group, a row [N] each: [G, N]. */
  scales: Float32Array;
  zeros: Uint8Array;
}

export class ColumnWorkspace {
  private views: BlockViews | null = null;
  private B = 0;
  private N = 0;

  private constructor(private readonly k: Kernels) {}

  static acquire(): ColumnWorkspace {
    const ws = idle.pop();
    if (ws) return ws;
    compiled ??= new WebAssembly.Module(Buffer.from(COLUMNS_WASM, 'base64'));
    return new ColumnWorkspace(new WebAssembly.Instance(compiled).exports as unknown as Kernels);
  }

  release(): void {
    this.views = null;
    idle.push(this);
  }

  /** Lay out blocks of up to B columns of N rows, G groups, err in float32 or float64; grows the memory if needed. */
  layout(B: number, N: number, G: number, err32: boolean): BlockViews {
    const sizes = [8 * B * N, (err32 ? 4 : 8) * B * N, B * N, 8 * B * B, 4 * G * N, G * N];
    const offsets: number[] = [];
    let end = 0;
    for (const s of sizes) {
      offsets.push(end);
      end += Math.ceil(s / 16) * 16;
    }
    const mem = this.k.memory;
    if (end > mem.buffer.byteLength) mem.grow(Math.ceil((end - mem.buffer.byteLength) / 65536));
    const buf = mem.buffer;
    const [w, e, q, u, s, z] = offsets as [number, number, number, number, number, number];
    this.B = B;
    this.N = N;
    this.views = {
      W1: new Float64Array(buf, w, B * N),
      Err1: err32 ? new Float32Array(buf, e, B * N) : new Float64Array(buf, e, B * N),
      q: new Uint8Array(buf, q, B * N),
      U: new Float64Array(buf, u, B * B),
      scales: new Float32Array(buf, s, G * N),
      zeros: new Uint8Array(buf, z, G * N),
    };
    return this.views;
  }

  /**
   * Columns s0..s1−1 of the block starting at position i1, rows n0..n1−1: quantize column i on the grid of group
   * gPos[i1 + i] with d = U[p, p] (U the full K×K factor) and subtract U[i, j]·err from the later columns j < s1 of
   * the sub-block (from the block's copy of U). Returns loss + Σ err² in the order the JavaScript loop of
   * gptq-block.ts sums it.
   */
  columns(s0: number, s1: number, n0: number, n1: number, i1: number, gPos: Int32Array, U: ArrayLike<number>, K: number, maxq: number, loss: number): number {
    const v = this.views!;
    const { B, N } = this;
    const w = v.W1.byteOffset;
    const e = v.Err1.byteOffset;
    const esz = v.Err1.BYTES_PER_ELEMENT;
    const err32 = esz === 4 ? 1 : 0;
    const count = n1 - n0;
    for (let i = s0; i < s1; i++) {
      const g = gPos[i1 + i]!;
      const row = i * N + n0;
      loss = this.k.quantize(w + 8 * row, e + esz * row, v.q.byteOffset + row, v.scales.byteOffset + 4 * (g * N + n0), v.zeros.byteOffset + g * N + n0, count, U[(i1 + i) * (K + 1)]!, maxq, err32, loss);
      if (i + 1 < s1) this.k.update(w + 8 * (row + N), w + 8 * row, v.U.byteOffset + 8 * (i * B + i + 1), s1 - i - 1, count, N);
    }
    return loss;
  }
}
