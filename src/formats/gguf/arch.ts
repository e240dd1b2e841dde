/**
 * What llama.cpp needs for each family, as one table per family: the llama.cpp architecture, the metadata keys
 * (hyper-parameters, routing rule) and the GGUF tensor of every Hugging Face tensor, with the transforms that
 * llama.cpp's graphs assume (q/k rows in ggml's interleaved RoPE order for `llama` and `deepseek`, MLA's `kv_b`
 * split into per-head `attn_k_b` (transposed) and `attn_v_b`, routed experts stacked [E, N, K]).
 * Configs llama.cpp cannot represent are refused with the reason, before any work.
 */
import { ConfigReader } from '../../architectures/_config.js';
import { ropeScaling } from '../../architectures/_rope.js';
import { modelTensors, type TensorEntry } from '../../architectures/tensors.js';
import type { MoeFfnSpec, ModelSpec } from '../../architectures/types.js';
import { fail } from '../../errors.js';
import { bool, f32, str, u32, type GgufValue } from './file.js';

/** How a GGUF tensor is made from the Hugging Face tensors. */
export type GgufSource =
  /** One HF tensor as is; `permuteHeads`: reorder its rows (q/k, rotate-half → interleaved) with that many heads. */
  | { kind: 'tensor'; hf: string; permuteHeads?: number; role: 'linear' | 'norm' | 'bias' | 'router' | 'embedding' | 'head' }
  /** Routed experts' weights stacked [E, N, K]. */
  | { kind: 'experts'; hf: string[] }
  /** MLA kv_b [H·(nope+v), r]: per head, its k rows transposed ([H, r, nope]) or its v rows ([H, v, r]). */
  | { kind: 'kv_b'; hf: string; part: 'k' | 'v'; heads: number; nope: number; v: number; rank: number };

export interface GgufTensorPlan {
  name: string;
  /** ggml dimensions, ne[0] the row length. */
  ne: number[];
  source: GgufSource;
}

export interface GgufModelPlan {
  arch: string;
  metadata: Array<[string, GgufValue]>;
  tensors: GgufTensorPlan[];
}

const LLAMA_ARCH: Record<string, string> = {
  mixtral: 'llama',
  qwen2_moe: 'qwen2moe',
  qwen3_moe: 'qwen3moe',
  olmoe: 'olmoe',
  deepseek: 'deepseek',
  deepseek_v2: 'deepseek2',
  deepseek_v3: 'deepseek2',
};

/** Why llama.cpp cannot run this model as configured, or null. */
export function unrepresentable(spec: ModelSpec, config: Record<string, unknown>): string | null {
  const a = spec.attention;
  const moe = spec.layers.filter((l) => l.ffn.kind === 'moe');
  const first = moe[0]?.ffn as MoeFfnSpec | undefined;
  if (!first) return 'it has no MoE layer';
  const r = first.routing;
  const denseIdx = spec.layers.filter((l) => l.ffn.kind === 'dense').map((l) => l.index);
  const family = spec.family;
  if (!(family in LLAMA_ARCH)) return `llama.cpp has no architecture for model_type ${family}`;
  if (family === 'deepseek' || family === 'deepseek_v2' || family === 'deepseek_v3') {
    if (denseIdx.some((i, k) => i !== k)) return `llama.cpp's ${LLAMA_ARCH[family]} keeps dense layers only before the first MoE layer (moe_layer_freq ${String(config['moe_layer_freq'])} puts dense layers ${denseIdx.join(', ')})`;
  } else if (denseIdx.length) {
    return `llama.cpp's ${LLAMA_ARCH[family]} has experts in every layer; dense layer(s) ${denseIdx.join(', ')} (mlp_only_layers / decoder_sparse_step) cannot be represented`;
  }
  if (a.kind === 'mha') {
    if (a.rope.dim !== a.headDim) return `partial rotary embeddings (${a.rope.dim} of ${a.headDim} dimensions) are not written`;
    if (a.slidingWindow !== null) return `sliding-window attention (sliding_window ${a.slidingWindow}) is not in llama.cpp's ${LLAMA_ARCH[family]}`;
    if (a.clipQkv !== null) return `OLMoE clip_qkv (${a.clipQkv}) is not implemented by llama.cpp's olmoe`;
    if (a.qkNorm === 'full' && a.numKvHeads !== a.numHeads) return `OLMoE with grouped-query attention: llama.cpp's olmoe assumes k_norm is hidden_size wide (it is ${a.numKvHeads * a.headDim})`;
    if ((a.qkvBias || a.oBias) && family !== 'qwen2_moe' && family !== 'mixtral') return `attention biases are not loaded by llama.cpp's ${LLAMA_ARCH[family]}`;
    if (a.oBias && family === 'qwen2_moe') return 'an o_proj bias is not loaded by llama.cpp\'s qwen2moe';
  } else if (a.rope.layout !== 'interleaved') {
    return 'DeepSeek MLA with rope_interleave false (llama.cpp\'s deepseek2 rotates adjacent pairs)';
  }
  const wantNorm: Record<string, boolean | null> = { mixtral: true, qwen3_moe: true, qwen2_moe: false, olmoe: false, deepseek: false };
  const want = wantNorm[family];
  if (want !== undefined && want !== null && r.normalize !== want)
    return `llama.cpp's ${LLAMA_ARCH[family]} ${want ? 'always renormalises' : 'never renormalises'} the top-k weights (norm_topk_prob ${String(config['norm_topk_prob'])})`;
  if (r.groups && r.groups.groupScore === 'max') return 'DeepSeek-V2 group_limited_greedy (group score = max): llama.cpp scores a group by the sum of its top-2 experts';
  if (family === 'deepseek' && r.scale !== 1) return 'DeepSeek-V1 with routed_scaling_factor ≠ 1';
  if (first.shared?.gate && family !== 'qwen2_moe') return 'a gated shared expert outside Qwen2-MoE';
  if (spec.lmHead === spec.embedTokens) return null; // tied: no `output` tensor, llama.cpp reuses token_embd
  return null;
}

/** q/k rows from Hugging Face rotate-half order to ggml's interleaved order: output row p takes input row src(p). */
export function permutedRow(p: number, rows: number, heads: number): number {
  const D = rows / heads;
  const h = Math.floor(p / D);
  const i = p - h * D;
  return h * D + (i % 2) * (D / 2) + Math.floor(i / 2);
}

/** The GGUF layout of a model (metadata without the tokenizer, tensors in file order). */
export function ggufPlan(spec: ModelSpec, config: Record<string, unknown>): GgufModelPlan {
  const why = unrepresentable(spec, config);
  if (why) throw fail('UNSUPPORTED', `--format gguf: llama.cpp cannot run this ${spec.family} model as configured: ${why}`);
  const arch = LLAMA_ARCH[spec.family]!;
  const cfg = new ConfigReader(config, 'config.json');
  const k = (key: string) => `${arch}.${key}`;
  const a = spec.attention;
  const moe = spec.layers.find((l) => l.ffn.kind === 'moe')!.ffn as MoeFfnSpec;
  const dense = spec.layers.find((l) => l.ffn.kind === 'dense')?.ffn;
  const r = moe.routing;
  const meta: Array<[string, GgufValue]> = [
    ['general.architecture', str(arch)],
    ['general.name', str(String(config['_name_or_path'] ?? spec.family))],
    [k('context_length'), u32(cfg.int('max_position_embeddings', 4096))],
    [k('embedding_length'), u32(spec.hiddenSize)],
    [k('block_count'), u32(spec.numLayers)],
    [k('feed_forward_length'), u32(spec.family === 'mixtral' || spec.family === 'olmoe' ? moe.expertIntermediateSize : dense?.kind === 'dense' ? dense.intermediateSize : cfg.int('intermediate_size', moe.expertIntermediateSize))],
    [k('attention.head_count'), u32(a.numHeads)],
    [k('attention.layer_norm_rms_epsilon'), f32(spec.rmsNormEps)],
    [k('expert_count'), u32(r.numExperts)],
    [k('expert_used_count'), u32(r.numExpertsUsed)],
  ];
  const params = cfg.object('rope_parameters');
  const theta = cfg.has('rope_theta') ? cfg.num('rope_theta') : typeof params?.['rope_theta'] === 'number' ? (params['rope_theta'] as number) : 10000;
  meta.push([k('rope.freq_base'), f32(theta)]);
  if (a.kind === 'mha') {
    meta.push([k('attention.head_count_kv'), u32(a.numKvHeads)], [k('attention.key_length'), u32(a.headDim)], [k('attention.value_length'), u32(a.headDim)]);
    meta.push([k('rope.dimension_count'), u32(a.rope.dim)]);
  } else {
    meta.push(
      [k('attention.head_count_kv'), u32(1)],
      [k('attention.q_lora_rank'), u32(a.qLoraRank ?? 0)],
      [k('attention.kv_lora_rank'), u32(a.kvLoraRank)],
      [k('attention.key_length'), u32(a.kvLoraRank + a.qkRopeHeadDim)],
      [k('attention.value_length'), u32(a.kvLoraRank)],
      [k('attention.key_length_mla'), u32(a.qkNopeHeadDim + a.qkRopeHeadDim)],
      [k('attention.value_length_mla'), u32(a.vHeadDim)],
      [k('rope.dimension_count'), u32(a.qkRopeHeadDim)],
    );
  }
  const scaling = ropeScaling(cfg);
  if (scaling) {
    const type = String(scaling['rope_type']);
    meta.push([k('rope.scaling.type'), str(type)], [k('rope.scaling.factor'), f32(Number(scaling['factor']))]);
    if (type === 'yarn') {
      meta.push(
        [k('rope.scaling.original_context_length'), u32(Number(scaling['original_max_position_embeddings'] ?? cfg.int('max_position_embeddings', 4096)))],
        [k('rope.scaling.yarn_beta_fast'), f32(Number(scaling['beta_fast'] ?? 32))],
        [k('rope.scaling.yarn_beta_slow'), f32(Number(scaling['beta_slow'] ?? 1))],
      );
      if (a.kind === 'mla') meta.push([k('rope.scaling.yarn_log_multiplier'), f32(0.1 * Number(scaling['mscale_all_dim'] ?? 0))]);
      else if (spec.family !== 'deepseek') throw fail('UNSUPPORTED', `--format gguf: YaRN rope scaling is written for DeepSeek MLA models only (${spec.family})`);
    }
  }
  meta.push([k('expert_feed_forward_length'), u32(moe.expertIntermediateSize)]);
  if (moe.shared) {
    if (spec.family === 'qwen2_moe') meta.push([k('expert_shared_feed_forward_length'), u32(moe.shared.intermediateSize)]);
    else meta.push([k('expert_shared_count'), u32(moe.shared.intermediateSize / moe.expertIntermediateSize)]);
  }
  if (spec.family.startsWith('deepseek')) {
    const leading = spec.layers.findIndex((l) => l.ffn.kind === 'moe');
    meta.push([k('leading_dense_block_count'), u32(leading)], [k('expert_weights_scale'), f32(r.scale)]);
    if (!moe.shared) meta.push([k('expert_shared_count'), u32(0)]);
  }
  if (arch === 'deepseek2') {
    meta.push([k('expert_weights_norm'), bool(r.normalize)], [k('expert_gating_func'), u32(r.scoring === 'sigmoid' ? 2 : 1)]);
    if (r.groups) meta.push([k('expert_group_count'), u32(r.groups.numGroups)], [k('expert_group_used_count'), u32(r.groups.numGroupsUsed)]);
  }

  return { arch, metadata: meta, tensors: ggufTensors(spec) };
}

/**
 * The GGUF tensors of a model, from its tensor table (architectures/tensors.ts), in table order: 2-D weights
 * reversed to ggml's ne (row length first), routed experts stacked at their first expert's place, MLA kv_b split.
 */
function ggufTensors(spec: ModelSpec): GgufTensorPlan[] {
  const a = spec.attention;
  // llama.cpp's `llama` and `deepseek` rotate adjacent pairs (ggml's "NORM" RoPE): q/k rows leave HF's rotate-half order.
  const permute = spec.family === 'mixtral' || spec.family === 'deepseek';
  const headsOf = (name: string): number | undefined => {
    if (!permute || a.kind !== 'mha') return undefined;
    if (name.endsWith('.attn_q.weight') || name.endsWith('.attn_q.bias')) return a.numHeads;
    if (name.endsWith('.attn_k.weight') || name.endsWith('.attn_k.bias')) return a.numKvHeads;
    return undefined;
  };
  const role = (t: TensorEntry): Extract<GgufSource, { kind: 'tensor' }>['role'] =>
    t.kind === 'embedding' ? 'embedding' : t.kind === 'lm_head' ? 'head' : t.kind === 'norm' ? 'norm' : t.kind === 'router' ? 'router' : t.name.endsWith('.bias') ? 'bias' : 'linear';
  const out: GgufTensorPlan[] = [];
  const stacks = new Map<string, GgufTensorPlan & { source: { kind: 'experts'; hf: string[] } }>();
  for (const t of modelTensors(spec)) {
    if (t.gguf === null) {
      // MLA kv_b [H·(nope+v), r]: per head, k rows transposed ([H, r, nope]) and v rows ([H, v, r]).
      if (a.kind !== 'mla') throw new Error(`${t.name} has no GGUF name`);
      const b = `blk.${t.layer}.`;
      const kvb = { hf: t.name, heads: a.numHeads, nope: a.qkNopeHeadDim, v: a.vHeadDim, rank: a.kvLoraRank };
      out.push({ name: `${b}attn_k_b.weight`, ne: [a.qkNopeHeadDim, a.kvLoraRank, a.numHeads], source: { kind: 'kv_b', part: 'k', ...kvb } });
      out.push({ name: `${b}attn_v_b.weight`, ne: [a.kvLoraRank, a.vHeadDim, a.numHeads], source: { kind: 'kv_b', part: 'v', ...kvb } });
      continue;
    }
    if (t.expert !== undefined) {
      const stack = stacks.get(t.gguf);
      if (stack) {
        stack.source.hf.push(t.name);
        stack.ne[2] = stack.source.hf.length;
        continue;
      }
      const entry = { name: t.gguf, ne: [t.shape[1]!, t.shape[0]!, 1], source: { kind: 'experts' as const, hf: [t.name] } };
      stacks.set(t.gguf, entry);
      out.push(entry);
      continue;
    }
    // 2-D [out, in] → ne [in, out]; a [1, H] gate (Qwen2-MoE shared_expert_gate) is the 1-D {H} llama.cpp expects.
    const ne = t.shape.length === 2 && t.shape[0] === 1 ? [t.shape[1]!] : [...t.shape].reverse();
    const heads = headsOf(t.gguf);
    out.push({ name: t.gguf, ne, source: { kind: 'tensor', hf: t.name, role: role(t), ...(heads ? { permuteHeads: heads } : {}) } });
  }
  return out;

}
