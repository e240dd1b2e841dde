/**
 * Relative reconstruction error on calibration inputs without keeping the inputs: with H = Σ x xᵀ (or Σ c·x xᵀ),
 * ‖WX − ŴX‖² = tr(Δ H Δᵀ) and ‖WX‖² = tr(W H Wᵀ), Δ = W − Ŵ: [N × K]·[K × K] products in onnxruntime. A GPTQ
 * solve already knows tr(Δ H Δᵀ) (GptqResult.hessianError); given as `num`, only ‖WX‖² is computed.
 */
import { attr, GraphBuilder, OnnxType } from '../graph/builder.js';
import { tensor, type SessionPool } from '../graph/session.js';

function errorGraph(withNum: boolean): Uint8Array {
  const F = OnnxType.FLOAT;
  const g = new GraphBuilder(withNum ? 'rel_error' : 'rel_error_den');
  const w = g.input('w', F, ['N', 'K']);
  const h = g.input('h', F, ['K', 'K']);
  const quad = (m: string) => g.op('ReduceSum', [g.op('Mul', [g.op('MatMul', [m, h]), m])], { keepdims: attr.i(0) });
  if (withNum) g.output('num', quad(g.op('Sub', [w, g.input('q', F, ['N', 'K'])])), F, []);
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
  const s = await pool.get(withNum ? 'rel_error' : 'rel_error_den', () => errorGraph(withNum));
  const feeds = { w: tensor.f32(W, [N, K]), h: tensor.f32(H, [K, K]), ...(withNum ? { q: tensor.f32(Q, [N, K]) } : {}) };
  const out = await pool.run(s, feeds);
  const n = withNum ? (out['num']!.data as Float32Array)[0]! : num;
  const den = (out['den']!.data as Float32Array)[0]!;
  return den > 0 ? Math.sqrt(Math.max(0, n) / den) : 0;
}
