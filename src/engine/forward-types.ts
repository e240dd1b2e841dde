/**
 * Types of the forward engine's seam (hooks, events, options) and the attention mask. Kept apart from the engine so
 * calibration and quantization code can depend on them without the engine itself.
 */
import type * as ort from 'onnxruntime-node';
import type { ModelSpec } from '../architectures/types.js';
import type { Routing } from '../routing/router.js';

export interface MoeRoutingEvent {
  layerIndex: number;
  /** Position of this batch in processing order (0, 1, ...) within the run. */
  batchIndex: number;
  /** Index of the batch's first token among all tokens of the run. */
  tokenOffset: number;
  /** Input of every expert of this layer: the post-attention-norm hidden states [T × hidden]. */
  ffnIn: Float32Array;
  /** Router logits [T × experts]. */
  routerLogits: Float32Array;
  /** The routing the engine uses for this batch. */
  routing: Routing;
}

export interface DenseFfnEvent {
  layerIndex: number;
  batchIndex: number;
  tokenOffset: number;
  ffnIn: Float32Array;
}

/**
 * Inputs of every linear of one layer for one batch (capture mode). Keys: `attn` (q/k/v, MLA q/q_a/kv_a input),
 * `o`, MLA `qB`/`kvB`, `ffn` (router, shared expert and dense gate/up input), `dense.down`, `shared.down`,
 * `expert.<e>.down` (rows of expert e only), and Qwen2-MoE's per-token `shared_gate` value.
 */
export interface ActivationsEvent {
  layerIndex: number;
  batchIndex: number;
  tokenOffset: number;
  numTokens: number;
  inputs: Record<string, Float32Array>;
  /** MoE layers: the routing used and, per expert, its rows (token indices within the batch) and combine weights. */
  routing?: Routing;
  rows?: Int32Array[];
  rowWeights?: Float32Array[];
}

export interface ForwardHooks {
  /** Capture the input of every linear and report it through onActivations (slower; for calibration). */
  capture?: boolean;
  onActivations?(event: ActivationsEvent): void | Promise<void>;
  /** Called when every batch has passed a layer (layer-major runs). */
  afterLayer?(layerIndex: number): void | Promise<void>;
  /** Extra per-expert selection bias for a MoE layer, read before each batch (null: none). */
  selectionBias?(layerIndex: number): Float32Array | null | undefined;
  onRouting?(event: MoeRoutingEvent): void;
  onDenseFfn?(event: DenseFfnEvent): void;
}

export interface RunOptions {
  /** 'logits' → [N·S × vocab]; 'nll' → −log p(next token) per position [N·S] (last position of each sequence NaN). */
  head: 'logits' | 'nll' | 'none';
  /** Tokens per onnxruntime run (whole sequences per batch, at least one). Default 4096. */
  batchTokens?: number;
  hooks?: ForwardHooks;
  /** Called after each unit of work (one layer of one batch, or one head batch). */
  onProgress?(done: number, total: number): void;
  /**
   * Keep the hidden states in a scratch file in this directory (removed at the end) instead of in memory, reading
   * back a batch, or a group of batches, at a time (activations.ts): for more tokens than memory holds.
   */
  spillDir?: string;
}

export interface RunResult {
  logits?: Float32Array;
  nll?: Float32Array;
  /** Final hidden states [N·S × hidden] (before the final norm); absent with spillDir. */
  hidden?: Float32Array;
}

/**
 * Additive causal mask [S, past + S]: query i (at position past + i) sees keys 0..past + i — or, with a sliding
 * window w, only keys j with (past + i) − j < w (transformers' sliding_window semantics).
 */
export function causalMask(S: number, past = 0, window: number | null = null): Float32Array {
  const L = past + S;
  const m = new Float32Array(S * L);
  for (let i = 0; i < S; i++) {
    const q = past + i;
    for (let j = 0; j < L; j++) if (j > q || (window !== null && q - j >= window)) m[i * L + j] = -Infinity;
  }
  return m;
}

/** The sliding window of a model's attention (null: full causal). */
export function attentionWindow(spec: ModelSpec): number | null {
  return spec.attention.kind === 'mha' ? spec.attention.slidingWindow : null;
}

/** What the attention half of a layer hands to the FFN half. */
export interface AttentionOutputs {
  numTokens: number;
  h: ort.Tensor;
  ffnIn: ort.Tensor;
  routerLogits: Float32Array | null;
  /** Softmax/sigmoid of the router logits (the routing's unbiased scores). */
  routerScores: Float32Array | null;
  /** Captured linear inputs (capture mode): attn, o, qB, kvB. */
  captured: Record<string, Float32Array>;
  /** With a KV cache: this step's keys/values [B, heads, S, d], to append to it. */
  newKey?: ort.Tensor;
  newValue?: ort.Tensor;
}

/** What one layer step needs besides the weights. */
export interface LayerStepContext {
  bs: ort.Tensor;
  cos: ort.Tensor;
  sin: ort.Tensor;
  mask: ort.Tensor;
  batchIndex: number;
  tokenOffset: number;
  hooks?: ForwardHooks;
  /** KV cache of this layer (decoding), position-major [P, B, heads, d]; absent for full-sequence runs. */
  past?: { key: ort.Tensor; value: ort.Tensor };
  /** Run the attention half only (capture passes that need attention inputs only); x is left unchanged. */
  attentionOnly?: boolean;
  /**
   * FFN half: route (MoE) and report the FFN input with its routing to the hooks, without running the experts or
   * the MLP (capture passes for router and gate/up Hessians); x is left unchanged.
   */
  ffnInputsOnly?: boolean;
  /**
   * MoE capture passes: run only these routed experts (their captured down inputs are what the pass is for), in
   * pieces of the streaming chunk size; no combine, no shared expert, x is left unchanged.
   */
  onlyExperts?: readonly number[];
}

