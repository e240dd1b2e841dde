/**
 * Reusable ONNX building blocks. Activations are 2-D [T, features] (T = batch × sequence) except inside attention;
 * weights arrive as graph inputs in PyTorch [out, in] orientation and are applied with Gemm(transB=1), so one graph
 * serves every layer of the same shape and weights stream through without re-building sessions.
 */
import { attr, type GraphBuilder } from './builder.js';

/** RMSNorm over the last axis: x / sqrt(mean(x²) + eps) * w (onnxruntime's SimplifiedLayerNormalization, fp32). */
export function rmsNorm(g: GraphBuilder, x: string, weight: string, eps: number): string {
  return g.op('SimplifiedLayerNormalization', [x, weight], { axis: attr.i(-1), epsilon: attr.f(eps), stash_type: attr.i(1) });
}

/** y = x · Wᵀ (+ b) for 2-D x [T, in] and W [out, in]. */
export function linear(g: GraphBuilder, x: string, weight: string, bias?: string): string {
  return g.op('Gemm', bias ? [x, weight, bias] : [x, weight], { transB: attr.i(1) });
}

/** silu(x) = x · sigmoid(x). */
export function silu(g: GraphBuilder, x: string): string {
  return g.op('Mul', [x, g.op('Sigmoid', [x])]);
}

/** SwiGLU MLP: down(silu(gate(x)) * up(x)). Returns the output and the down_proj input (for calibration). */
export function swiglu(g: GraphBuilder, x: string, w: { gate: string; up: string; down: string }): { out: string; hidden: string } {
  const hidden = g.op('Mul', [silu(g, linear(g, x, w.gate)), linear(g, x, w.up)]);
  return { out: linear(g, hidden, w.down), hidden };
}

/** [T, heads*dim] → [B, heads, S, dim], where `bs` is an int64 [2] input holding [B, S]. */
export function splitHeads(g: GraphBuilder, x: string, bs: string, heads: number, dim: number): string {
  const shape = g.op('Concat', [bs, g.i64([heads, dim])], { axis: attr.i(0) });
  return g.op('Transpose', [g.op('Reshape', [x, shape])], { perm: attr.ints([0, 2, 1, 3]) });
}

/** [B, heads, S, dim] → [T, heads*dim]. */
export function mergeHeads(g: GraphBuilder, x: string, heads: number, dim: number): string {
  const t = g.op('Transpose', [x], { perm: attr.ints([0, 2, 1, 3]) });
  return g.op('Reshape', [t, g.i64([-1, heads * dim])]);
}

/**
 * Rotary embedding on x [B, H, S, d] with cos/sin [S, d] in rotate_half layout.
 * 'interleaved' first de-interleaves pairs (2i, 2i+1) → [evens, odds], as transformers' DeepSeek code does.
 */
export function rope(g: GraphBuilder, x: string, cos: string, sin: string, dim: number, layout: 'rotate_half' | 'interleaved'): string {
  let v = x;
  if (layout === 'interleaved') {
    const pairs = g.op('Reshape', [v, g.i64([0, 0, 0, dim / 2, 2])]);
    v = g.op('Reshape', [g.op('Transpose', [pairs], { perm: attr.ints([0, 1, 2, 4, 3]) }), g.i64([0, 0, 0, dim])]);
  }
  const [x1, x2] = g.opN('Split', [v, g.i64([dim / 2, dim / 2])], 2, { axis: attr.i(-1) });
  const rotated = g.op('Concat', [g.op('Neg', [x2!]), x1!], { axis: attr.i(-1) });
  return g.op('Add', [g.op('Mul', [v, cos]), g.op('Mul', [rotated, sin])]);
}

/** Repeat KV heads for grouped-query attention: [B, kvH, L, d] → [B, kvH*rep, L, d]. */
export function repeatKv(g: GraphBuilder, x: string, kvHeads: number, rep: number, dim: number): string {
  if (rep === 1) return x;
  const expanded = g.op('Expand', [g.op('Unsqueeze', [x, g.i64([2])]), g.i64([1, 1, rep, 1, 1])]);
  return g.op('Reshape', [expanded, g.i64([0, kvHeads * rep, -1, dim])]);
}

/** softmax(Q·Kᵀ·scale + mask)·V for Q [B,H,S,dq], K [B,H,L,dq], V [B,H,L,dv], additive mask [S, L]. */
export function scaledDotAttention(g: GraphBuilder, q: string, k: string, v: string, mask: string, scale: number): string {
  const kt = g.op('Transpose', [k], { perm: attr.ints([0, 1, 3, 2]) });
  const scores = g.op('Add', [g.op('Mul', [g.op('MatMul', [q, kt]), g.f32([scale], [])]), mask]);
  return g.op('MatMul', [g.op('Softmax', [scores], { axis: attr.i(-1) }), v]);
}
