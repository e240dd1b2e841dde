/**
 * The normalized description of a MoE causal LM: everything the engine, calibration and quantizers need to know,
 * independent of which Hugging Face family it came from. Families (src/architectures/<model_type>.ts) turn a
 * config.json into this shape; the engine only ever reads this shape.
 */

/** How rotary embeddings pair dimensions. */
export type RopeLayout = 'rotate_half' | 'interleaved';

export interface RopeSpec {
  /** Number of rotated dimensions per head. */
  dim: number;
  layout: RopeLayout;
  /** inv_freq[i] for i < dim/2, already adjusted for rope scaling (YaRN, linear, ...). */
  invFreq: Float64Array;
  /** Multiplier applied to cos and sin (YaRN attention factor; 1 otherwise). */
  cosSinScale: number;
}

/** Standard (grouped-query) multi-head attention. */
export interface MhaSpec {
  kind: 'mha';
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  qkvBias: boolean;
  oBias: boolean;
  /** 'per_head': RMSNorm over head_dim (Qwen3); 'full': over the whole projection (OLMoE); 'none'. */
  qkNorm: 'none' | 'per_head' | 'full';
  /** OLMoE clip_qkv: clamp q, k, v to ±clip after projection (null = off). */
  clipQkv: number | null;
  rope: RopeSpec;
  softmaxScale: number;
  /** Mixtral-style sliding-window attention: a query sees at most this many most recent keys (null = full causal). */
  slidingWindow: number | null;
}

/** DeepSeek V2/V3 multi-head latent attention. */
export interface MlaSpec {
  kind: 'mla';
  numHeads: number;
  qLoraRank: number | null;
  kvLoraRank: number;
  qkNopeHeadDim: number;
  qkRopeHeadDim: number;
  vHeadDim: number;
  rope: RopeSpec;
  softmaxScale: number;
}

export type AttentionSpec = MhaSpec | MlaSpec;

/**
 * How a MoE router turns logits into (selected experts, combine weights).
 * Combine weights are always derived from the *unbiased* scores; biases only steer selection.
 */
export interface RoutingSpec {
  numExperts: number;
  numExpertsUsed: number;
  scoring: 'softmax' | 'sigmoid';
  /** Group-limited selection (DeepSeek V2 group_limited_greedy / V3 noaux_tc); null = plain top-k. */
  groups: null | {
    numGroups: number;
    numGroupsUsed: number;
    /** V2: max score in the group; V3: sum of the top-2 biased scores in the group. */
    groupScore: 'max' | 'top2_sum';
    /**
     * Selection score given to experts outside the kept groups: transformers 5.18 DeepSeek-V3 (and the official
     * inference code) use −inf, DeepSeek-V2 uses 0.0 — with negative biased scores a 0.0-masked expert can win.
     */
    maskedScore: number;
  };
  /** Divide the selected weights by their sum. */
  normalize: boolean;
  /** Added to the sum before dividing (DeepSeek: 1e-20). */
  normalizeEps: number;
  /** Multiplier on the final weights (DeepSeek routed_scaling_factor; 1 otherwise). */
  scale: number;
  /** Model's own selection bias (DeepSeek-V3 e_score_correction_bias) is present in the checkpoint. */
  hasCorrectionBias: boolean;
}

/** A SwiGLU MLP's tensor names (PyTorch [out, in] weights). */
export interface MlpTensors {
  gate: string;
  up: string;
  down: string;
}

export interface DenseFfnSpec {
  kind: 'dense';
  intermediateSize: number;
  tensors: MlpTensors;
}

export interface MoeFfnSpec {
  kind: 'moe';
  routing: RoutingSpec;
  expertIntermediateSize: number;
  router: string;
  correctionBias: string | null;
  /** Tensor names of routed expert e. */
  expert: (e: number) => MlpTensors;
  shared: null | {
    intermediateSize: number;
    tensors: MlpTensors;
    /** Qwen2-MoE: per-token sigmoid gate [1, H]. */
    gate: string | null;
  };
}

export type FfnSpec = DenseFfnSpec | MoeFfnSpec;

/** Tensor names of one decoder layer's attention. */
export interface AttentionTensors {
  inputNorm: string;
  postAttentionNorm: string;
  /** MHA: q, k, v, o (+ biases, + q_norm/k_norm). MLA: q or q_a/q_a_norm/q_b, kv_a, kv_a_norm, kv_b, o. */
  [role: string]: string;
}

export interface LayerSpec {
  index: number;
  attention: AttentionTensors;
  ffn: FfnSpec;
}

export interface ModelSpec {
  /** Hugging Face model_type. */
  family: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  rmsNormEps: number;
  attention: AttentionSpec;
  layers: LayerSpec[];
  embedTokens: string;
  finalNorm: string;
  lmHead: string;
  eosTokenId: number | null;
  /** config.json max_position_embeddings (the longest sequence the model was made for), if given. */
  maxPositions: number | null;
  /** Data type declared in config.json (torch_dtype / dtype). */
  declaredDtype: string | null;
}

/** Convenience: the MoE layers of a model. */
export function moeLayers(spec: ModelSpec): Array<LayerSpec & { ffn: MoeFfnSpec }> {
  return spec.layers.filter((l): l is LayerSpec & { ffn: MoeFfnSpec } => l.ffn.kind === 'moe');
}
