/**
 * Hessian accumulation for GPTQ/AGQ, shared by `calibrate --save-hessians` and `quantize`.
 *
 * For a linear with input rows X [n × d] we keep running sums (float32):
 *   xtx  = Σ x xᵀ            (plain GPTQ Hessian, up to the constant 2/N GPTQ uses — GPTQ is scale-invariant)
 *   xtcx = Σ c · x xᵀ        (AGQ: each row weighted by its affinity c, MoEQuant Eq. 19: H = Xᵀ diag(c) X)
 * The products run in onnxruntime (MLAS kernels; no JavaScript loop over d² entries per token). The sums are
 * symmetric, so only the lower block triangle is computed: the d columns are cut into blocks of ≤ 512 and each batch
 * is one run of Gemm(X_iᵀ, X_j) + acc_ij for i ≥ j (10 products of a quarter for d = 2048: ~½ the time of the full
 * d × d Gemm, measured), each written into its accumulator in place (the output tensor is the input C: no buffer
 * allocated or copied per batch). Reading a sum assembles the full matrix once and frees the blocks.
 */
import type * as ort from 'onnxruntime-node';
import { attr, GraphBuilder, OnnxType } from '../graph/builder.js';
import { tensor, type SessionPool } from '../graph/session.js';

const F = OnnxType.FLOAT;
/** Largest block of the lower triangle (columns). */
const BLOCK = 512;

/** Column ranges of the blocks of a d-wide sum: near-equal, each ≤ BLOCK. */
export function hessianBlocks(d: number): Array<[number, number]> {
  const nb = Math.ceil(d / BLOCK);
  const out: Array<[number, number]> = [];
  for (let i = 0; i < nb; i++) out.push([Math.floor((i * d) / nb), Math.floor(((i + 1) * d) / nb)]);
  return out;
}

/** Index of block pair (i, j), i ≥ j, in row order of the lower triangle. */
const pair = (i: number, j: number) => (i * (i + 1)) / 2 + j;

function gramGraph(d: number, plain: boolean, weighted: boolean): Uint8Array {
  const g = new GraphBuilder(`gram_${plain ? 'p' : ''}${weighted ? 'w' : ''}`);
  const x = g.input('x', F, ['n', d]);
  const blocks = hessianBlocks(d);
  const cols = blocks.map(([a, b]) => (blocks.length === 1 ? x : g.op('Slice', [x, g.i64([a]), g.i64([b]), g.i64([1])])));
  const c = weighted ? g.op('Unsqueeze', [g.input('c', F, ['n']), g.i64([1])]) : null;
  const scaled = c ? cols.map((xi) => g.op('Mul', [xi, c])) : null;
  for (let i = 0; i < blocks.length; i++) {
    for (let j = 0; j <= i; j++) {
      const dims = [blocks[i]![1] - blocks[i]![0], blocks[j]![1] - blocks[j]![0]];
      const k = pair(i, j);
      if (plain) {
        const acc = g.input(`acc_${k}`, F, dims);
        g.output(`out_${k}`, g.op('Gemm', [cols[i]!, cols[j]!, acc], { transA: attr.i(1), beta: attr.f(1) }), F, dims);
      }
      if (scaled) {
        const acc = g.input(`accw_${k}`, F, dims);
        g.output(`outw_${k}`, g.op('Gemm', [scaled[i]!, cols[j]!, acc], { transA: attr.i(1), beta: attr.f(1) }), F, dims);
      }
    }
  }
  return g.build();
}

/** The lower block triangle of one running sum, assembled into the full symmetric matrix on first read. */
class BlockSum {
  private blocks: ort.Tensor[] | null;
  private full: Float32Array | null = null;

  constructor(
    readonly dim: number,
    private readonly ranges: Array<[number, number]>,
  ) {
    this.blocks = [];
    for (let i = 0; i < ranges.length; i++) {
      for (let j = 0; j <= i; j++) {
        const r = ranges[i]![1] - ranges[i]![0];
        const c = ranges[j]![1] - ranges[j]![0];
        this.blocks.push(tensor.f32(new Float32Array(r * c), [r, c]));
      }
    }
  }

  /** Feeds and (aliased) outputs of the block accumulators, named `${prefix}_k` / `${outPrefix}_k`. */
  bind(prefix: string, outPrefix: string, feeds: Record<string, ort.Tensor>, outputs: Record<string, ort.Tensor>): void {
    if (!this.blocks) throw new Error('HessianAccumulator: rows added after the sum was read');
    this.blocks.forEach((t, k) => {
      feeds[`${prefix}_${k}`] = outputs[`${outPrefix}_${k}`] = t;
    });
  }

  /** The full d × d matrix (the lower triangle mirrored into the upper); the blocks are freed. */
  matrix(): Float32Array {
    if (this.full) return this.full;
    const d = this.dim;
    const H = new Float32Array(d * d);
    const blocks = this.blocks!;
    for (let i = 0; i < this.ranges.length; i++) {
      const [r0, r1] = this.ranges[i]!;
      for (let j = 0; j <= i; j++) {
        const [c0, c1] = this.ranges[j]!;
        const w = c1 - c0;
        const b = blocks[pair(i, j)]!.data as Float32Array;
        for (let r = r0; r < r1; r++) H.set(b.subarray((r - r0) * w, (r - r0 + 1) * w), r * d + c0);
      }
    }
    // Upper triangle from the lower one, in tiles that stay in cache (diagonal blocks were computed whole; taking
    // their lower half makes H exactly symmetric).
    const T = 64;
    for (let i0 = 0; i0 < d; i0 += T) {
      for (let j0 = 0; j0 <= i0; j0 += T) {
        const i1 = Math.min(i0 + T, d);
        for (let r = i0; r < i1; r++) {
          const c1 = Math.min(j0 + T, r);
          for (let c = j0; c < c1; c++) H[c * d + r] = H[r * d + c]!;
        }
      }
    }
    this.blocks = null;
    this.full = H;
    return H;
  }
}

/**
 * Running Σ x xᵀ (and optionally Σ c x xᵀ) of one linear's input. `plain = false` (weighted accumulators only)
 * skips Σ x xᵀ when nobody will read it (AGQ solves and scores experts with the weighted sum alone): half the
 * products per batch. Rows are added, then the sums read (reading ends accumulation).
 */
export class HessianAccumulator {
  private readonly plainSum: BlockSum | null;
  private readonly weightedSum: BlockSum | null;
  /** Rows accumulated. */
  tokens = 0;
  /** Σ c over accumulated rows (weighted accumulators). */
  weightSum = 0;

  constructor(
    private readonly pool: SessionPool,
    readonly dim: number,
    readonly weighted: boolean,
    readonly plain = true,
  ) {
    if (!plain && !weighted) throw new Error('HessianAccumulator: nothing to accumulate');
    const ranges = hessianBlocks(dim);
    this.plainSum = plain ? new BlockSum(dim, ranges) : null;
    this.weightedSum = weighted ? new BlockSum(dim, ranges) : null;
  }

  /** Add rows X [n × dim] (and their weights c [n] for weighted accumulators). */
  async add(rows: Float32Array, c?: Float32Array): Promise<void> {
    const n = rows.length / this.dim;
    if (n === 0) return;
    const session = await this.pool.get(`gram:${this.dim}:${this.plain}:${this.weighted}`, () => gramGraph(this.dim, this.plain, this.weighted));
    const feeds: Record<string, ort.Tensor> = { x: tensor.f32(rows, [n, this.dim]) };
    const outputs: Record<string, ort.Tensor> = {};
    this.plainSum?.bind('acc', 'out', feeds, outputs);
    if (this.weightedSum) {
      if (!c || c.length !== n) throw new Error(`HessianAccumulator: ${n} rows need ${n} weights`);
      feeds['c'] = tensor.f32(c, [n]);
      this.weightedSum.bind('accw', 'outw', feeds, outputs);
      for (const v of c) this.weightSum += v;
    }
    await this.pool.run(session, feeds, outputs);
    this.tokens += n;
  }

  /** Σ x xᵀ [dim × dim]. */
  get xtx(): Float32Array {
    if (!this.plainSum) throw new Error('HessianAccumulator: Σ x xᵀ was not kept (plain = false)');
    return this.plainSum.matrix();
  }

  /** Σ c x xᵀ [dim × dim] (weighted accumulators only). */
  get xtcx(): Float32Array | null {
    return this.weightedSum?.matrix() ?? null;
  }
}

/** Copy the rows `rows` of X [T × d] into a new [rows.length × d] array. */
export function gatherRows(x: Float32Array, d: number, rows: Int32Array): Float32Array {
  const out = new Float32Array(rows.length * d);
  for (let i = 0; i < rows.length; i++) out.set(x.subarray(rows[i]! * d, rows[i]! * d + d), i * d);
  return out;
}
