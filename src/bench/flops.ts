/**
 * Floating-point operations of a forward pass per token, from a model's shapes (the benchmark's "fraction of the
 * GEMM peak"). Counted: every linear a token passes through (2·N·K each; routed experts: only its k experts), the
 * router, causal attention's q·k and p·v over the keys a token sees (on average (S + 1) / 2 of S, or the sliding
 * window), and lm_head. Not counted: norms, activations, softmax, RoPE, gathers (O(hidden) per token).
 */
import type { LayerSpec, ModelSpec } from '../architectures/types.js';

const ATTENTION_LINEARS = ['q', 'k', 'v', 'o', 'qA', 'qB', 'kvA', 'kvB'];

export interface ForwardFlops {
  /** Per decoder layer, per token. */
  layers: number[];
  /** Final norm + lm_head, per token. */
  head: number;
  /** Everything, per token. */
  total: number;
}

/** Average number of keys a query sees in a causal window of S tokens (with an optional sliding window). */
export function meanContext(S: number, window: number | null): number {
  let sum = 0;
  for (let i = 0; i < S; i++) sum += window === null ? i + 1 : Math.min(i + 1, window);
  return sum / S;
}

function layerFlops(spec: ModelSpec, layer: LayerSpec, shape: (name: string) => number[], seqLen: number): number {
  const linear = (name: string) => {
    const [N, K] = shape(name);
    return 2 * N! * K!;
  };
  let f = 0;
  for (const role of ATTENTION_LINEARS) if (layer.attention[role]) f += linear(layer.attention[role]!);
  const a = spec.attention;
  const ctx = meanContext(seqLen, a.kind === 'mha' ? a.slidingWindow : null);
  const [qk, pv] = a.kind === 'mha' ? [a.headDim, a.headDim] : [a.qkNopeHeadDim + a.qkRopeHeadDim, a.vHeadDim];
  f += 2 * a.numHeads * (qk + pv) * ctx;
  const ffn = layer.ffn;
  const mlp = (t: { gate: string; up: string; down: string }) => linear(t.gate) + linear(t.up) + linear(t.down);
  if (ffn.kind === 'dense') return f + mlp(ffn.tensors);
  f += linear(ffn.router) + ffn.routing.numExpertsUsed * mlp(ffn.expert(0));
  if (ffn.shared) f += mlp(ffn.shared.tensors) + (ffn.shared.gate ? linear(ffn.shared.gate) : 0);
  return f;
}

/** FLOPs per token of a full forward over windows of `seqLen` tokens. */
export function forwardFlops(spec: ModelSpec, shape: (name: string) => number[], seqLen: number): ForwardFlops {
  const layers = spec.layers.map((l) => layerFlops(spec, l, shape, seqLen));
  const head = 2 * spec.vocabSize * spec.hiddenSize;
  return { layers, head, total: layers.reduce((s, x) => s + x, head) };
}
