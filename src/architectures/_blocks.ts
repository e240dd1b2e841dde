/**
 * Shared pieces that the per-family files compose: attention descriptions (MHA, MLA), FFN descriptions (dense, MoE)
 * and the decoder skeleton with Hugging Face tensor names. A family file states only what differs.
 */
import { fail } from '../errors.js';
import type { ConfigReader } from './_config.js';
import { ropeScaling, ropeSpec, yarnMscale } from './_rope.js';
import type {
  AttentionSpec,
  AttentionTensors,
  FfnSpec,
  MhaSpec,
  MlaSpec,
  MlpTensors,
  ModelSpec,
  MoeFfnSpec,
  RopeLayout,
  RoutingSpec,
} from './types.js';

export const layerPrefix = (i: number) => `model.layers.${i}`;

export function mlpTensors(prefix: string, names: { gate: string; up: string; down: string }): MlpTensors {
  return { gate: `${prefix}.${names.gate}.weight`, up: `${prefix}.${names.up}.weight`, down: `${prefix}.${names.down}.weight` };
}

export const PROJ_NAMES = { gate: 'gate_proj', up: 'up_proj', down: 'down_proj' };

/** Standard GQA attention. */
export function mha(
  cfg: ConfigReader,
  opts: { qkvBias?: boolean; oBias?: boolean; qkNorm?: MhaSpec['qkNorm']; clipQkv?: number | null; layout?: RopeLayout; slidingWindow?: number | null },
): MhaSpec {
  const numHeads = cfg.int('num_attention_heads');
  const numKvHeads = cfg.int('num_key_value_heads', numHeads);
  const hidden = cfg.int('hidden_size');
  const headDim = cfg.int('head_dim', Math.floor(hidden / numHeads));
  if (numHeads % numKvHeads !== 0)
    throw fail('BAD_CONFIG', `num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  const rotary = Math.round(headDim * cfg.num('partial_rotary_factor', 1));
  return {
    kind: 'mha',
    numHeads,
    numKvHeads,
    headDim,
    qkvBias: opts.qkvBias ?? false,
    oBias: opts.oBias ?? false,
    qkNorm: opts.qkNorm ?? 'none',
    clipQkv: opts.clipQkv ?? null,
    rope: ropeSpec(cfg, rotary, opts.layout ?? 'rotate_half'),
    softmaxScale: 1 / Math.sqrt(headDim),
    slidingWindow: opts.slidingWindow ?? null,
  };
}

export function mhaTensors(i: number, spec: MhaSpec): AttentionTensors {
  const p = `${layerPrefix(i)}.self_attn`;
  const t: AttentionTensors = {
    inputNorm: `${layerPrefix(i)}.input_layernorm.weight`,
    postAttentionNorm: `${layerPrefix(i)}.post_attention_layernorm.weight`,
    q: `${p}.q_proj.weight`,
    k: `${p}.k_proj.weight`,
    v: `${p}.v_proj.weight`,
    o: `${p}.o_proj.weight`,
  };
  if (spec.qkvBias) Object.assign(t, { qBias: `${p}.q_proj.bias`, kBias: `${p}.k_proj.bias`, vBias: `${p}.v_proj.bias` });
  if (spec.oBias) t['oBias'] = `${p}.o_proj.bias`;
  if (spec.qkNorm !== 'none') Object.assign(t, { qNorm: `${p}.q_norm.weight`, kNorm: `${p}.k_norm.weight` });
  return t;
}

/**
 * DeepSeek multi-head latent attention. `applyMscale`: multiply the softmax scale by mscale² under YaRN
 * (transformers DeepSeek-V3 and the V2 remote code do).
 */
export function mla(cfg: ConfigReader, layout: RopeLayout): MlaSpec {
  const qkNope = cfg.int('qk_nope_head_dim');
  const qkRope = cfg.int('qk_rope_head_dim');
  let softmaxScale = 1 / Math.sqrt(qkNope + qkRope);
  const scaling = ropeScaling(cfg);
  if (scaling) {
    const mscaleAllDim = Number(scaling['mscale_all_dim'] ?? 0);
    if (mscaleAllDim) {
      const m = yarnMscale(Number(scaling['factor']), mscaleAllDim);
      softmaxScale *= m * m;
    }
  }
  return {
    kind: 'mla',
    numHeads: cfg.int('num_attention_heads'),
    qLoraRank: cfg.intOrNull('q_lora_rank'),
    kvLoraRank: cfg.int('kv_lora_rank'),
    qkNopeHeadDim: qkNope,
    qkRopeHeadDim: qkRope,
    vHeadDim: cfg.int('v_head_dim'),
    rope: ropeSpec(cfg, qkRope, layout),
    softmaxScale,
  };
}

export function mlaTensors(i: number, spec: MlaSpec): AttentionTensors {
  const p = `${layerPrefix(i)}.self_attn`;
  const t: AttentionTensors = {
    inputNorm: `${layerPrefix(i)}.input_layernorm.weight`,
    postAttentionNorm: `${layerPrefix(i)}.post_attention_layernorm.weight`,
    kvA: `${p}.kv_a_proj_with_mqa.weight`,
    kvANorm: `${p}.kv_a_layernorm.weight`,
    kvB: `${p}.kv_b_proj.weight`,
    o: `${p}.o_proj.weight`,
  };
  if (spec.qLoraRank === null) t['q'] = `${p}.q_proj.weight`;
  else Object.assign(t, { qA: `${p}.q_a_proj.weight`, qANorm: `${p}.q_a_layernorm.weight`, qB: `${p}.q_b_proj.weight` });
  return t;
}

export function attentionTensors(i: number, spec: AttentionSpec): AttentionTensors {
  return spec.kind === 'mha' ? mhaTensors(i, spec) : mlaTensors(i, spec);
}

/** Routed experts and experts per token. */
export interface ExpertCounts {
  numExperts: number;
  numExpertsUsed: number;
}

/** `expertsKey` routed experts, `num_experts_per_tok` per token; top-k picks distinct experts, so k ≤ E. */
export function expertCounts(cfg: ConfigReader, expertsKey: string): ExpertCounts {
  const numExperts = cfg.int(expertsKey);
  const numExpertsUsed = cfg.int('num_experts_per_tok');
  if (numExpertsUsed > numExperts)
    cfg.reject('num_experts_per_tok', `must be ≤ "${cfg.name(expertsKey)}" = ${numExperts}: top-k picks distinct experts`);
  return { numExperts, numExpertsUsed };
}

/** Softmax top-k router as in Mixtral/Qwen/OLMoE/DeepSeek-V1/V2. */
export function softmaxRouting(counts: ExpertCounts, normalize: boolean, normalizeEps = 0): RoutingSpec {
  return { ...counts, scoring: 'softmax', groups: null, normalize, normalizeEps, scale: 1, hasCorrectionBias: false };
}

/**
 * DeepSeek group-limited selection from `n_group` / `topk_group` (with `fallback` when the file has none), checked
 * where transformers' router fails or mixes tokens: the groups must be equal slices of the experts (else its view
 * regroups scores across tokens), at most n_group of them kept, and the kept groups must hold the top-k (else it
 * selects masked experts); 'top2_sum' also needs two experts per group.
 */
export function groupLimit(
  cfg: ConfigReader,
  counts: ExpertCounts,
  expertsKey: string,
  opts: { groupScore: 'max' | 'top2_sum'; maskedScore: number; fallback?: { numGroups: number; numGroupsUsed: number } },
): NonNullable<RoutingSpec['groups']> {
  const numGroups = cfg.int('n_group', opts.fallback?.numGroups);
  const numGroupsUsed = cfg.int('topk_group', opts.fallback?.numGroupsUsed);
  const got = (key: string, v: number) => (cfg.has(key) ? undefined : `${v} by default`);
  const experts = `"${cfg.name(expertsKey)}" = ${counts.numExperts}`;
  if (counts.numExperts % numGroups !== 0) cfg.reject('n_group', `must divide ${experts} into equal groups`, got('n_group', numGroups));
  const perGroup = counts.numExperts / numGroups;
  if (opts.groupScore === 'top2_sum' && perGroup < 2)
    cfg.reject('n_group', `must leave at least 2 experts per group (${experts}): the group score sums each group's best two`, got('n_group', numGroups));
  if (numGroupsUsed > numGroups)
    cfg.reject('topk_group', `must be ≤ "n_group" = ${numGroups}`, got('topk_group', numGroupsUsed));
  const kept = numGroupsUsed * perGroup;
  if (counts.numExpertsUsed > kept)
    cfg.reject(
      'num_experts_per_tok',
      `must be ≤ "topk_group" × experts per group = ${numGroupsUsed} × ${perGroup} = ${kept}: only the kept groups' experts can be selected`,
    );
  return { numGroups, numGroupsUsed, groupScore: opts.groupScore, maskedScore: opts.maskedScore };
}

export function moeFfn(
  i: number,
  opts: {
    prefix: string;
    routing: RoutingSpec;
    expertIntermediateSize: number;
    expertNames?: { gate: string; up: string; down: string };
    shared?: MoeFfnSpec['shared'];
    correctionBias?: boolean;
  },
): MoeFfnSpec {
  const p = `${layerPrefix(i)}.${opts.prefix}`;
  const names = opts.expertNames ?? PROJ_NAMES;
  return {
    kind: 'moe',
    routing: opts.routing,
    expertIntermediateSize: opts.expertIntermediateSize,
    router: `${p}.gate.weight`,
    correctionBias: opts.correctionBias ? `${p}.gate.e_score_correction_bias` : null,
    expert: (e) => mlpTensors(`${p}.experts.${e}`, names),
    shared: opts.shared ?? null,
  };
}

export function denseFfn(i: number, intermediateSize: number): FfnSpec {
  return { kind: 'dense', intermediateSize, tensors: mlpTensors(`${layerPrefix(i)}.mlp`, PROJ_NAMES) };
}

/** Assemble the ModelSpec of a standard decoder-only HF causal LM. */
export function decoderModel(
  cfg: ConfigReader,
  family: string,
  attention: AttentionSpec,
  ffn: (layerIndex: number) => FfnSpec,
): ModelSpec {
  const numLayers = cfg.int('num_hidden_layers');
  const tie = cfg.bool('tie_word_embeddings', false);
  const eos = cfg.raw['eos_token_id'];
  return {
    family,
    vocabSize: cfg.int('vocab_size'),
    hiddenSize: cfg.int('hidden_size'),
    numLayers,
    rmsNormEps: cfg.num('rms_norm_eps', 1e-6),
    attention,
    layers: Array.from({ length: numLayers }, (_, i) => ({
      index: i,
      attention: attentionTensors(i, attention),
      ffn: ffn(i),
    })),
    embedTokens: 'model.embed_tokens.weight',
    finalNorm: 'model.norm.weight',
    lmHead: tie ? 'model.embed_tokens.weight' : 'lm_head.weight',
    eosTokenId: typeof eos === 'number' ? eos : Array.isArray(eos) && typeof eos[0] === 'number' ? eos[0] : null,
    maxPositions: cfg.has('max_position_embeddings') ? cfg.int('max_position_embeddings') : null,
    declaredDtype: typeof cfg.raw['torch_dtype'] === 'string' ? (cfg.raw['torch_dtype'] as string) : typeof cfg.raw['dtype'] === 'string' ? (cfg.raw['dtype'] as string) : null,
  };
}
