/**
 * Relative reconstruction error on calibration inputs without keeping the inputs: with H = Σ x xᵀ (or Σ c·x xᵀ),
 * ‖WX − ŴX‖² = tr(Δ H Δᵀ) and ‖WX‖² = tr(W H Wᵀ), Δ = W − Ŵ: [N × K]·[K × K] products in onnxruntime. H is
 * symmetric, so each trace is taken over the lower block triangle: tr(M H Mᵀ) = Σ_i ⟨M_i H_ii, M_i⟩ +
 * 2 Σ_{i>j} ⟨M_i H_ij, M_j⟩ over the column blocks of calibration/hessian.ts (10 of 16 block products for K = 2048).
 * A GPTQ solve already knows tr(Δ H Δᵀ) (GptqResult.hessianError); given as `num`, only ‖WX‖² is computed.
 */
import { attr, GraphBuilder, OnnxType } from '../graph/builder.js';
import { tensor, type SessionPool } from '../graph/session.js';
import { hessianBlocks } from '../calibration/hessian.js';

function errorGraph(K: number, withNum: boolean): Uint8Array {
  const F = OnnxType.FLOAT;
  const g = new GraphBuilder(withNum ? 'rel_error' : 'rel_error_den');
  const w = g.input('w', F, ['N', K]);
  const h = g.input('h', F, [K, K]);
  const blocks = hessianBlocks(K);
  const cut = (x: string, axis: number, [a, b]: [number, number]) => (blocks.length === 1 ? x : g.op('Slice', [x, g.i64([a]), g.i64([b]), g.i64([axis])]));
  const rows = blocks.map((r) => cut(h, 0, r));
  const hBlock = (i: number, j: number) => cut(rows[i]!, 1, blocks[j]!);
  const sum = (t: string) => g.op('ReduceSum', [t], { keepdims: attr.i(0) });
  const quad = (m: string) => {
    const cols = blocks.map((r) => cut(m, 1, r));
    const terms: string[] = [];
    for (let i = 0; i < blocks.length; i++) {
      for (let j = 0; j <= i; j++) {
        const t = sum(g.op('Mul', [g.op('MatMul', [cols[i]!, hBlock(i, j)]), cols[j]!]));
        terms.push(i === j ? t : g.op('Add', [t, t]));
      }
    }
    return terms.length === 1 ? terms[0]! : g.op('Sum', terms);
  };
  if (withNum) g.output('num', quad(g.op('Sub', [w, g.input('q', F, ['N', K])])), F, []);
  g.output('den', quad(w), F, []);
  return g.build();
}

export async function relativeError(
  pool: SessionPool,
  W: Float32Array,
  Q: Float32Array,
  N: number,
  K: number,
  H: Float32Array,
  num?: number,
): Promise<number> {
  const withNum = num === undefined;
  const s = await pool.get(`${withNum ? 'rel_error' : 'rel_error_den'}:${K}`, () => errorGraph(K, withNum));
  const feeds = { w: tensor.f32(W, [N, K]), h: tensor.f32(H, [K, K]), ...(withNum ? { q: tensor.f32(Q, [N, K]) } : {}) };
  const out = await pool.run(s, feeds);
  const n = withNum ? (out['num']!.data as Float32Array)[0]! : num;
  const den = (out['den']!.data as Float32Array)[0]!;
  return den > 0 ? Math.sqrt(Math.max(0, n) / den) : 0;
}
