/**
 * Random bf16 checkpoints for benchmarks and slow tests:
 *  - a Mixtral-layout one sharded ≤ 1 GB with model.safetensors.index.json (the large-model memory benchmark);
 *  - real models' layer shapes in the layout transformers writes (`layout: 'hf'`: one model.safetensors up to
 *    transformers' default 50 GB shard, config.json and generation_config.json as transformers 5.18 writes them),
 *    e.g. one Qwen3-30B-A3B layer (QWEN3_30B_A3B_LAYER), checked against a transformers-written file's manifest in
 *    test/bench/synth.test.ts. Larger real-shape sets come from scripts/bench/make_real_shapes.py.
 * Tensors are produced lazily, one at a time, by the streaming writer, so generating a multi-GB checkpoint needs
 * about one tensor of memory. Weights: normal(0, 0.02) as transformers initialises linears; norms 1. The result is
 * cached and reused while the config and the generator version match.
 */
import fs from 'node:fs';
import path from 'node:path';
import { specFromConfig } from '../architectures/registry.js';
import { expectedTensors, type ExpectedTensor } from '../architectures/shapes.js';
import { INDEX_FILE } from '../checkpoint/checkpoint.js';
import { float32ToBf16 } from '../checkpoint/dtypes.js';
import { writeSafetensors, type TensorToWrite } from '../checkpoint/writer.js';

const GENERATOR_VERSION = 1;
const META_FILE = 'bench-meta.json';
/** Largest shard, in bytes of tensor data (Mixtral bench layout). */
export const SHARD_BYTES = 1e9;
/** transformers' default max_shard_size ("50GB"). */
const HF_SHARD_BYTES = 50e9;

/** How generateCheckpoint lays out files: the bench's 1 GB shards, or what transformers' save_pretrained writes. */
export type SynthLayout = 'bench' | 'hf';

/**
 * One Qwen3-30B-A3B decoder layer (hidden 2048, 32 q / 4 kv heads of 128, 128 experts top-8 of width 768) with a
 * 4,096-token vocabulary: config.json exactly as transformers 5.18 saves it for Qwen3MoeForCausalLM (see
 * test/fixtures/real-shapes/qwen3-30b-a3b-1layer.json, written by scripts/bench/make_real_shapes.py).
 */
export const QWEN3_30B_A3B_LAYER = {
  architectures: ['Qwen3MoeForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: null,
  decoder_sparse_step: 1,
  dtype: 'bfloat16',
  eos_token_id: 4095,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 6144,
  max_position_embeddings: 40960,
  mlp_only_layers: [],
  model_type: 'qwen3_moe',
  moe_intermediate_size: 768,
  norm_topk_prob: true,
  num_attention_heads: 32,
  num_experts_per_tok: 8,
  num_hidden_layers: 1,
  num_key_value_heads: 4,
  num_local_experts: 128,
  output_router_logits: false,
  pad_token_id: null,
  rms_norm_eps: 1e-6,
  rope_parameters: { rope_theta: 1000000.0, rope_type: 'default' },
  router_aux_loss_coef: 0.001,
  sliding_window: null,
  tie_word_embeddings: false,
  transformers_version: '5.18.0',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 4096,
} as const;

/** generation_config.json as transformers 5.18 writes it next to a model config (layout 'hf'). */
export function hfGenerationConfig(config: Record<string, unknown>): Record<string, unknown> {
  return {
    _from_model_config: true,
    ...(config['bos_token_id'] != null ? { bos_token_id: config['bos_token_id'] } : {}),
    ...(config['eos_token_id'] != null ? { eos_token_id: config['eos_token_id'] } : {}),
    output_attentions: false,
    output_hidden_states: false,
    ...(config['pad_token_id'] != null ? { pad_token_id: config['pad_token_id'] } : {}),
    transformers_version: config['transformers_version'] ?? '5.18.0',
    use_cache: true,
  };
}

/** ~4.3 GB in bf16: 7 layers × (8 experts × 3 × 2048×5632 + GQA attention) + 2 × 32000×2048. */
export const LARGE_MIXTRAL_CONFIG = {
  architectures: ['MixtralForCausalLM'],
  model_type: 'mixtral',
  vocab_size: 32000,
  hidden_size: 2048,
  intermediate_size: 5632,
  num_hidden_layers: 7,
  num_attention_heads: 16,
  num_key_value_heads: 8,
  head_dim: 128,
  num_local_experts: 8,
  num_experts_per_tok: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 1e6,
  max_position_embeddings: 4096,
  hidden_act: 'silu',
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  bos_token_id: 1,
  eos_token_id: 2,
  sliding_window: null,
} as const;

export function plannedTensors(config: Record<string, unknown>): ExpectedTensor[] {
  return expectedTensors(specFromConfig(config, 'bench config'));
}

export function totalBytesBf16(config: Record<string, unknown>): number {
  return plannedTensors(config).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * 2, 0);
}

/** 65536 bf16 samples of N(0, std²) by inverse CDF, so a random 16-bit index gives a normal-ish bf16 value. */
function normalTable(std: number): Uint16Array {
  const f = new Float32Array(65536);
  for (let i = 0; i < f.length; i++) f[i] = std * invNormal((i + 0.5) / f.length);
  return float32ToBf16(f);
}

/** Acklam's rational approximation of the standard normal quantile (|error| < 1.2e-9). */
function invNormal(p: number): number {
  const a = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
  const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
  const c = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  if (p < lo || p > 1 - lo) {
    const q = Math.sqrt(-2 * Math.log(p < lo ? p : 1 - p));
    const x = (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
    return p < lo ? x : -x;
  }
  const q = p - 0.5;
  const r = q * q;
  return ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q) / (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1);
}

/** Random bf16 bytes for `numel` elements (xorshift32 seeded per tensor; two table lookups per 32-bit draw). */
function randomBf16(numel: number, seed: number, table: Uint16Array): Uint8Array {
  const words = Math.ceil(numel / 2);
  const buf = new Uint32Array(words);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < words; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf[i] = table[x & 0xffff]! | (table[x >>> 16]! << 16);
  }
  return new Uint8Array(buf.buffer, 0, numel * 2);
}

function onesBf16(numel: number): Uint8Array {
  return new Uint8Array(new Uint16Array(numel).fill(0x3f80).buffer);
}

export interface GenerateResult {
  dir: string;
  reused: boolean;
  totalBytes: number;
  shards: number;
  seconds: number;
}

function metaFor(config: Record<string, unknown>, layout: SynthLayout, std: number) {
  const base = layout === 'bench' ? { generator: GENERATOR_VERSION, shardBytes: SHARD_BYTES, config } : { generator: GENERATOR_VERSION, layout, config };
  return { ...base, ...(std !== 0.02 ? { std } : {}) };
}

/** True when `dir` holds a complete checkpoint written by this generator for `config`. */
export function isCached(dir: string, config: Record<string, unknown>, layout: SynthLayout = 'bench', std = 0.02): boolean {
  try {
    const meta = JSON.parse(fs.readFileSync(path.join(dir, META_FILE), 'utf8')) as { meta: unknown; files: Record<string, number> };
    if (JSON.stringify(meta.meta) !== JSON.stringify(metaFor(config, layout, std))) return false;
    if (!fs.existsSync(path.join(dir, 'config.json'))) return false;
    return Object.entries(meta.files).every(([f, size]) => fs.existsSync(path.join(dir, f)) && fs.statSync(path.join(dir, f)).size === size);
  } catch {
    return false;
  }
}

/** Write (or reuse) the random checkpoint in `dir` (weights N(0, std²), norms 1; `dir` is replaced: give it a directory of its own). */
export function generateCheckpoint(dir: string, config: Record<string, unknown>, layout: SynthLayout = 'bench', std = 0.02): GenerateResult {
  const t0 = performance.now();
  const tensors = plannedTensors(config);
  const totalBytes = tensors.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * 2, 0);
  const shardBytes = layout === 'hf' ? HF_SHARD_BYTES : SHARD_BYTES;
  if (isCached(dir, config, layout, std)) {
    const shards = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).length;
    return { dir, reused: true, totalBytes, shards, seconds: (performance.now() - t0) / 1000 };
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });

  // Group tensors into shards of at most SHARD_BYTES, in model order.
  const groups: ExpectedTensor[][] = [[]];
  let used = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * 2;
    if (used + bytes > shardBytes && groups[groups.length - 1]!.length > 0) {
      groups.push([]);
      used = 0;
    }
    groups[groups.length - 1]!.push(t);
    used += bytes;
  }

  const table = normalTable(std);
  const pad = (n: number) => String(n).padStart(5, '0');
  const weightMap: Record<string, string> = {};
  const files: Record<string, number> = {};
  let seed = 1;
  groups.forEach((group, i) => {
    const file = layout === 'hf' && groups.length === 1 ? 'model.safetensors' : `model-${pad(i + 1)}-of-${pad(groups.length)}.safetensors`;
    const list: TensorToWrite[] = group.map((t) => {
      const numel = t.shape.reduce((a, b) => a * b, 1);
      const s = seed++;
      weightMap[t.name] = file;
      return { name: t.name, dtype: 'BF16', shape: t.shape, data: () => (t.kind === 'norm' ? onesBf16(numel) : randomBf16(numel, s, table)) };
    });
    writeSafetensors(path.join(dir, file), list, { format: 'pt' });
    files[file] = fs.statSync(path.join(dir, file)).size;
  });
  if (groups.length > 1 || layout === 'bench')
    fs.writeFileSync(path.join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: weightMap }, null, 2));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  if (layout === 'hf') fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify(hfGenerationConfig(config), null, 2));
  // Written last: its presence marks the checkpoint as complete.
  fs.writeFileSync(path.join(dir, META_FILE), JSON.stringify({ meta: metaFor(config, layout, std), files }, null, 2));
  return { dir, reused: false, totalBytes, shards: groups.length, seconds: (performance.now() - t0) / 1000 };
}

/**
 * A byte-level BPE tokenizer.json with no merges: the 256 byte tokens (GPT-2's byte-to-unicode map) and
 * `vocabSize − 256` unreachable filler tokens, for generated checkpoints that have no tokenizer (GGUF needs one).
 */
export function writeByteTokenizer(dir: string, vocabSize: number): void {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) (bs.push(b), cs.push(256 + n++));
  const vocab: Record<string, number> = {};
  bs.forEach((_, i) => (vocab[String.fromCodePoint(cs[i]!)] = i));
  for (let i = 256; i < vocabSize; i++) vocab[`<filler${i}>`] = i;
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const model = { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: [] };
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({ version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null, pre_tokenizer: byteLevel, post_processor: null, decoder: byteLevel, model }));
}

/** A Mixtral-layout checkpoint whose linears all have K % 256 == 0 (GGUF K-quants), ~4.6 MB in bf16. */
export const KQUANT_MIXTRAL_CONFIG = {
  architectures: ['MixtralForCausalLM'],
  model_type: 'mixtral',
  vocab_size: 512,
  hidden_size: 256,
  intermediate_size: 256,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 64,
  num_local_experts: 4,
  num_experts_per_tok: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 2048,
  hidden_act: 'silu',
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  bos_token_id: null,
  eos_token_id: 511,
  sliding_window: null,
} as const;

/**
 * DeepSeek-V2-Lite's layout scaled down, with its awkward widths kept awkward: the dense first layer's
 * intermediate_size (10944 in the real model) is 320 and the experts' width 160, neither a multiple of the default
 * group size 128 (groups of 128, 128, 64 and 128, 32), while every K is a multiple of 32 (GPTQ packs at 2, 3, 4
 * and 8 bits). MLA without q_lora (direct q_proj), kv_lora_rank 64 (< 128: one group per row), 4 routed experts
 * top-2 and 1 shared; ~1.2 MB in bf16.
 */
export const PARTIAL_GROUP_DEEPSEEK_V2_CONFIG = {
  architectures: ['DeepseekV2ForCausalLM'],
  model_type: 'deepseek_v2',
  vocab_size: 512,
  hidden_size: 128,
  intermediate_size: 320,
  moe_intermediate_size: 160,
  num_hidden_layers: 2,
  first_k_dense_replace: 1,
  moe_layer_freq: 1,
  num_attention_heads: 2,
  num_key_value_heads: 2,
  q_lora_rank: null,
  kv_lora_rank: 64,
  qk_nope_head_dim: 32,
  qk_rope_head_dim: 16,
  v_head_dim: 32,
  n_routed_experts: 4,
  n_shared_experts: 1,
  num_experts_per_tok: 2,
  n_group: 1,
  topk_group: 1,
  topk_method: 'greedy',
  scoring_func: 'softmax',
  norm_topk_prob: false,
  routed_scaling_factor: 1.0,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  rope_scaling: null,
  max_position_embeddings: 2048,
  hidden_act: 'silu',
  attention_bias: false,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  bos_token_id: null,
  eos_token_id: 511,
} as const;
