/**
 * Relative reconstruction error on calibration inputs without keeping the inputs: with H = Σ x xᵀ (or Σ c·x xᵀ),
 * ‖WX − ŴX‖² = tr(Δ H Δᵀ) and ‖WX‖² = tr(W H Wᵀ), Δ = W − Ŵ. Two [N × K]·[K × K] products, in onnxruntime.
 */
import { attr, GraphBuilder, OnnxType } from '../graph/builder.js';
import { tensor, type SessionPool } from '../graph/session.js';

function errorGraph(): Uint8Array {
  const F = OnnxType.FLOAT;
  const g = new GraphBuilder('rel_error');
  const w = g.input('w', F, ['N', 'K']);
  const q = g.input('q', F, ['N', 'K']);
  const h = g.input('h', F, ['K', 'K']);
  const quad = (m: string) => g.op('ReduceSum', [g.op('Mul', [g.op('MatMul', [m, h]), m])], { keepdims: attr.i(0) });
  g.output('num', quad(g.op('Sub', [w, q])), F, []);
  g.output('den', quad(w), F, []);
  return g.build();
}

export async function relativeError(pool: SessionPool, W: Float32Array, Q: Float32Array, N: number, K: number, H: Float32Array): Promise<number> {
  const s = await pool.get('rel_error', errorGraph);
  const out = await pool.run(s, { w: tensor.f32(W, [N, K]), q: tensor.f32(Q, [N, K]), h: tensor.f32(H, [K, K]) });
  const num = (out['num']!.data as Float32Array)[0]!;
  const den = (out['den']!.data as Float32Array)[0]!;
  return den > 0 ? Math.sqrt(Math.max(0, num) / den) : 0;
}
