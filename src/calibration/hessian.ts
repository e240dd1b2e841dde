/**
 * Hessian accumulation for GPTQ/AGQ, shared by `calibrate --save-hessians` and `quantize`.
 *
 * For a linear with input rows X [n × d] we keep running sums (float32):
 *   xtx  = Σ x xᵀ            (plain GPTQ Hessian, up to the constant 2/N GPTQ uses — GPTQ is scale-invariant)
 *   xtcx = Σ c · x xᵀ        (AGQ: each row weighted by its affinity c, MoEQuant Eq. 19: H = Xᵀ diag(c) X)
 * The products run in onnxruntime as one Gemm(Xᵀ, X) + acc per batch (MLAS kernels; no JavaScript loop over d²
 * entries per token), written into the accumulator in place (the output tensor is the input C): no d² buffer is
 * allocated or copied per batch.
 */
import type * as ort from 'onnxruntime-node';
import { attr, GraphBuilder, OnnxType } from '../graph/builder.js';
import { tensor, type SessionPool } from '../graph/session.js';

const F = OnnxType.FLOAT;

function gramGraph(d: number, plain: boolean, weighted: boolean): Uint8Array {
  const g = new GraphBuilder(`gram_${plain ? 'p' : ''}${weighted ? 'w' : ''}`);
  const x = g.input('x', F, ['n', d]);
  if (plain) {
    const acc = g.input('acc', F, [d, d]);
    g.output('out', g.op('Gemm', [x, x, acc], { transA: attr.i(1), beta: attr.f(1) }), F, [d, d]);
  }
  if (weighted) {
    const c = g.input('c', F, ['n']);
    const accW = g.input('acc_w', F, [d, d]);
    const xc = g.op('Mul', [x, g.op('Unsqueeze', [c, g.i64([1])])]);
    g.output('out_w', g.op('Gemm', [xc, x, accW], { transA: attr.i(1), beta: attr.f(1) }), F, [d, d]);
  }
  return g.build();
}

/**
 * Running Σ x xᵀ (and optionally Σ c x xᵀ) of one linear's input. `plain = false` (weighted accumulators only)
 * skips Σ x xᵀ when nobody will read it (AGQ solves and scores experts with the weighted sum alone): one Gemm
 * per batch instead of two.
 */
export class HessianAccumulator {
  private readonly plainAcc: ort.Tensor | null;
  private readonly weightedAcc: ort.Tensor | null;
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
    this.plainAcc = plain ? tensor.f32(new Float32Array(dim * dim), [dim, dim]) : null;
    this.weightedAcc = weighted ? tensor.f32(new Float32Array(dim * dim), [dim, dim]) : null;
  }

  /** Add rows X [n × dim] (and their weights c [n] for weighted accumulators). */
  async add(rows: Float32Array, c?: Float32Array): Promise<void> {
    const n = rows.length / this.dim;
    if (n === 0) return;
    const session = await this.pool.get(`gram:${this.dim}:${this.plain}:${this.weighted}`, () => gramGraph(this.dim, this.plain, this.weighted));
    const feeds: Record<string, ort.Tensor> = { x: tensor.f32(rows, [n, this.dim]) };
    const outputs: Record<string, ort.Tensor> = {};
    if (this.plainAcc) feeds['acc'] = outputs['out'] = this.plainAcc;
    if (this.weighted) {
      if (!c || c.length !== n) throw new Error(`HessianAccumulator: ${n} rows need ${n} weights`);
      feeds['c'] = tensor.f32(c, [n]);
      feeds['acc_w'] = outputs['out_w'] = this.weightedAcc!;
      for (const v of c) this.weightSum += v;
    }
    await this.pool.run(session, feeds, outputs);
    this.tokens += n;
  }

  /** Σ x xᵀ [dim × dim]. */
  get xtx(): Float32Array {
    if (!this.plainAcc) throw new Error('HessianAccumulator: Σ x xᵀ was not kept (plain = false)');
    return this.plainAcc.data as Float32Array;
  }

  /** Σ c x xᵀ [dim × dim] (weighted accumulators only). */
  get xtcx(): Float32Array | null {
    return (this.weightedAcc?.data as Float32Array | undefined) ?? null;
  }
}

/** Copy the rows `rows` of X [T × d] into a new [rows.length × d] array. */
export function gatherRows(x: Float32Array, d: number, rows: Int32Array): Float32Array {
  const out = new Float32Array(rows.length * d);
  for (let i = 0; i < rows.length; i++) out.set(x.subarray(rows[i]! * d, rows[i]! * d + d), i * d);
  return out;
}
