/**
 * Reading a GGUF file (ours or any other tool's) as a Hugging Face model: config.json rebuilt from the metadata,
 * tensors under their Hugging Face names, dequantized to float32 on load with the writer's transforms undone
 * (q/k rows back to rotate-half order, expert stacks sliced, MLA k_b/v_b merged back into kv_b) — the same
 * per-family table (arch.ts) read the other way. `eval` and `inspect` run on it unchanged.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CheckpointTensorInfo } from '../../checkpoint/checkpoint.js';
import { specFromConfig } from '../../architectures/registry.js';
import type { ModelSpec } from '../../architectures/types.js';
import { fail } from '../../errors.js';
import { ggufPlan, permutedRow, type GgufTensorPlan } from './arch.js';
import { GgufFile } from './file.js';
import { dequantizeRows, rowBytes, type GgmlType } from './quants.js';
import { GGUF_FILE } from './writer.js';

/** The GGUF file `p` names (a .gguf file, or a directory with model.gguf and no config.json), else null. */
export function ggufPath(p: string): string | null {
  try {
    const st = fs.statSync(p);
    if (st.isFile()) return p.endsWith('.gguf') ? p : null;
    if (st.isDirectory() && !fs.existsSync(path.join(p, 'config.json')) && fs.existsSync(path.join(p, GGUF_FILE))) return path.join(p, GGUF_FILE);
  } catch {
    return null;
  }
  return null;
}

/** A Hugging Face config.json for the model in a GGUF file. */
export function configFromGguf(g: GgufFile): Record<string, unknown> {
  const arch = String(g.get('general.architecture'));
  const n = (key: string, fallback?: number): number => {
    const v = g.get(`${arch}.${key}`);
    if (typeof v === 'number') return v;
    if (fallback !== undefined) return fallback;
    throw fail('BAD_CHECKPOINT', `${g.path}: metadata ${arch}.${key} is missing`);
  };
  const b = (key: string, fallback: boolean) => {
    const v = g.get(`${arch}.${key}`);
    return typeof v === 'boolean' ? v : fallback;
  };
  const embd = g.tensors.get('token_embd.weight');
  if (!embd) throw fail('BAD_CHECKPOINT', `${g.path}: tensor token_embd.weight is missing`);
  const hidden = n('embedding_length');
  const heads = n('attention.head_count');
  const eos = g.get('tokenizer.ggml.eos_token_id');
  const bos = g.get('tokenizer.ggml.bos_token_id');
  const c: Record<string, unknown> = {
    vocab_size: embd.ne[1],
    hidden_size: hidden,
    num_hidden_layers: n('block_count'),
    num_attention_heads: heads,
    rms_norm_eps: n('attention.layer_norm_rms_epsilon'),
    rope_theta: n('rope.freq_base', 10000),
    max_position_embeddings: n('context_length', 4096),
    tie_word_embeddings: !g.tensors.has('output.weight'),
    eos_token_id: typeof eos === 'number' ? eos : null,
    bos_token_id: typeof bos === 'number' ? bos : null,
    num_experts_per_tok: n('expert_used_count'),
  };
  const experts = n('expert_count', 0);
  if (!experts) throw fail('UNSUPPORTED', `${g.path}: ${arch} model without experts (moe-quant runs MoE models)`);
  const ffn = n('feed_forward_length', 0);
  const expFfn = n('expert_feed_forward_length', ffn);
  const mha = () => {
    c['num_key_value_heads'] = n('attention.head_count_kv', heads);
    c['head_dim'] = n('attention.key_length', hidden / heads);
  };
  const scaling = g.get(`${arch}.rope.scaling.type`);
  if (scaling === 'yarn') {
    const logMul = n('rope.scaling.yarn_log_multiplier', 0);
    c['rope_scaling'] = {
      type: 'yarn',
      factor: n('rope.scaling.factor'),
      original_max_position_embeddings: n('rope.scaling.original_context_length'),
      beta_fast: n('rope.scaling.yarn_beta_fast', 32),
      beta_slow: n('rope.scaling.yarn_beta_slow', 1),
      mscale: logMul / 0.1,
      mscale_all_dim: logMul / 0.1,
    };
  } else if (scaling === 'linear') c['rope_scaling'] = { type: 'linear', factor: n('rope.scaling.factor') };
  else if (scaling !== undefined && scaling !== 'none') throw fail('UNSUPPORTED', `${g.path}: rope scaling "${String(scaling)}" cannot be read`);
  switch (arch) {
    case 'llama':
      mha();
      Object.assign(c, { model_type: 'mixtral', num_local_experts: experts, intermediate_size: ffn || expFfn });
      break;
    case 'qwen3moe':
      mha();
      Object.assign(c, { model_type: 'qwen3_moe', num_experts: experts, moe_intermediate_size: expFfn, intermediate_size: ffn || expFfn, norm_topk_prob: true });
      break;
    case 'qwen2moe':
      mha();
      Object.assign(c, {
        model_type: 'qwen2_moe',
        num_experts: experts,
        moe_intermediate_size: expFfn,
        intermediate_size: ffn || expFfn,
        shared_expert_intermediate_size: n('expert_shared_feed_forward_length'),
        norm_topk_prob: false,
        qkv_bias: g.tensors.has('blk.0.attn_q.bias'),
      });
      break;
    case 'olmoe':
      mha();
      Object.assign(c, { model_type: 'olmoe', num_experts: experts, intermediate_size: expFfn, norm_topk_prob: false });
      break;
    case 'deepseek':
      mha();
      Object.assign(c, {
        model_type: 'deepseek',
        n_routed_experts: experts,
        n_shared_experts: n('expert_shared_count', 0),
        moe_intermediate_size: expFfn,
        intermediate_size: ffn,
        first_k_dense_replace: n('leading_dense_block_count', 0),
        norm_topk_prob: false,
        scoring_func: 'softmax',
      });
      break;
    case 'deepseek2': {
      const sigmoid = n('expert_gating_func', 1) === 2;
      const rope = n('rope.dimension_count');
      const qLora = n('attention.q_lora_rank', 0);
      Object.assign(c, {
        model_type: sigmoid ? 'deepseek_v3' : 'deepseek_v2',
        num_key_value_heads: heads,
        n_routed_experts: experts,
        n_shared_experts: n('expert_shared_count', 0),
        moe_intermediate_size: expFfn,
        intermediate_size: ffn,
        first_k_dense_replace: n('leading_dense_block_count', 0),
        q_lora_rank: qLora || null,
        kv_lora_rank: n('attention.kv_lora_rank'),
        qk_rope_head_dim: rope,
        qk_nope_head_dim: n('attention.key_length_mla') - rope,
        v_head_dim: n('attention.value_length_mla'),
        norm_topk_prob: b('expert_weights_norm', false),
        routed_scaling_factor: n('expert_weights_scale', 1),
        scoring_func: sigmoid ? 'sigmoid' : 'softmax',
        topk_method: sigmoid ? 'noaux_tc' : 'greedy',
        n_group: n('expert_group_count', 1),
        topk_group: n('expert_group_used_count', 1),
        rope_interleave: true,
      });
      break;
    }
    default:
      throw fail('UNSUPPORTED', `${g.path}: llama.cpp architecture "${arch}" cannot be read (llama with experts, qwen2moe, qwen3moe, olmoe, deepseek, deepseek2)`);
  }
  return c;
}

/** The subset of a checkpoint the engine reads, over a GGUF file: Hugging Face names, float32 on load. */
export class GgufCheckpoint {
  readonly files: string[];
  readonly totalBytes: number;
  /** HF tensor name → the GGUF tensor(s) it comes from. */
  private readonly byHf = new Map<string, { plan: GgufTensorPlan; index: number; other?: GgufTensorPlan }>();
  private readonly shapes: Map<string, number[]>;

  constructor(
    readonly dir: string,
    readonly file: GgufFile,
    spec: ModelSpec,
    config: Record<string, unknown>,
    shapes: Map<string, number[]>,
  ) {
    this.files = [file.path];
    this.shapes = shapes;
    let total = 0;
    for (const t of file.tensors.values()) total += t.byteLength;
    this.totalBytes = total;
    const plan = ggufPlan(spec, config);
    for (const t of plan.tensors) {
      if (!file.tensors.has(t.name)) throw fail('BAD_CHECKPOINT', `${file.path}: tensor ${t.name} is missing`);
      const got = file.tensors.get(t.name)!.ne;
      if (got.join(',') !== t.ne.join(',')) throw fail('BAD_CHECKPOINT', `${file.path}: tensor ${t.name} has ne [${got}] but its metadata implies [${t.ne}]`);
      const s = t.source;
      if (s.kind === 'experts') s.hf.forEach((hf, e) => this.byHf.set(hf, { plan: t, index: e }));
      else if (s.kind === 'kv_b') {
        const prev = this.byHf.get(s.hf);
        if (prev) prev.other = t;
        else this.byHf.set(s.hf, { plan: t, index: 0 });
      } else this.byHf.set(s.hf, { plan: t, index: 0 });
    }
  }

  names(): string[] {
    return [...this.byHf.keys()].sort();
  }

  has(name: string): boolean {
    return this.byHf.has(name);
  }

  /** GGML type a tensor is stored in. */
  ggufType(name: string): GgmlType {
    return this.file.tensors.get(this.entry(name).plan.name)!.type;
  }

  /** GGUF tensors per GGML type in the file. */
  typeCounts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of this.file.tensors.values()) out[t.type] = (out[t.type] ?? 0) + 1;
    return out;
  }

  info(name: string): CheckpointTensorInfo {
    const e = this.entry(name);
    const shape = this.shapes.get(name) ?? [];
    const numel = shape.reduce((a, b) => a * b, 1);
    const t = this.file.tensors.get(e.plan.name)!;
    const share = e.plan.source.kind === 'experts' ? t.byteLength / e.plan.source.hf.length : t.byteLength;
    const other = e.other ? this.file.tensors.get(e.other.name)!.byteLength : 0;
    return { name, dtype: 'F32', shape, numel, byteOffset: t.offset, byteLength: share + other, file: this.file.path };
  }

  private entry(name: string) {
    const e = this.byHf.get(name);
    if (!e) throw fail('BAD_CHECKPOINT', `tensor ${name} not found in GGUF file ${this.file.path}`);
    return e;
  }

  /** Rows [r0, r0+count) of GGUF tensor `plan` (rows of ne[0] values), dequantized. */
  private rowsOf(plan: GgufTensorPlan, r0: number, count: number): Float32Array {
    const t = this.file.tensors.get(plan.name)!;
    const rb = rowBytes(t.type, t.ne[0]!);
    const bytes = this.file.readRange(plan.name, r0 * rb, count * rb);
    return dequantizeRows(t.type, bytes, count, t.ne[0]!);
  }

  readFloat32(name: string): Float32Array {
    const e = this.entry(name);
    const s = e.plan.source;
    const rowLen = e.plan.ne[0]!;
    const rows = e.plan.ne.slice(1).reduce((a, b) => a * b, 1);
    if (s.kind === 'experts') {
      const per = rows / s.hf.length;
      return this.rowsOf(e.plan, e.index * per, per);
    }
    if (s.kind === 'kv_b') {
      const [kPlan, vPlan] = s.part === 'k' ? [e.plan, e.other!] : [e.other!, e.plan];
      const k = this.rowsOf(kPlan, 0, s.heads * s.rank); // [H, r, nope]
      const v = this.rowsOf(vPlan, 0, s.heads * s.v); // [H, v, r]
      const per = s.nope + s.v;
      const out = new Float32Array(s.heads * per * s.rank);
      for (let h = 0; h < s.heads; h++) {
        out.set(v.subarray(h * s.v * s.rank, (h + 1) * s.v * s.rank), (h * per + s.nope) * s.rank);
        for (let i = 0; i < s.nope; i++) for (let c = 0; c < s.rank; c++) out[(h * per + i) * s.rank + c] = k[(h * s.rank + c) * s.nope + i]!;
      }
      return out;
    }
    const data = this.rowsOf(e.plan, 0, rows);
    if (!s.permuteHeads) return data;
    // Undo the q/k permutation: GGUF row p holds HF row permutedRow(p).
    const n = rows === 1 ? rowLen : rows;
    const unit = rows === 1 ? 1 : rowLen;
    const out = new Float32Array(data.length);
    for (let p = 0; p < n; p++) {
      const src = permutedRow(p, n, s.permuteHeads);
      out.set(data.subarray(p * unit, (p + 1) * unit), src * unit);
    }
    return out;
  }

  readFloat32Into(name: string, dst: Float32Array): Float32Array {
    dst.set(this.readFloat32(name));
    return dst;
  }

  readRowsFloat32(name: string, start: number, count: number): Float32Array {
    const e = this.entry(name);
    if (e.plan.source.kind === 'tensor' && !e.plan.source.permuteHeads) return this.rowsOf(e.plan, start, count);
    const width = this.shapes.get(name)![1]!;
    return this.readFloat32(name).slice(start * width, (start + count) * width);
  }

  readBytes(name: string): Uint8Array {
    throw fail('UNSUPPORTED', `raw bytes of ${name}: GGUF tensors are read as float32`);
  }

  close(): void {
    this.file.close();
  }
}

/** Config and spec of the model in GGUF file `file` (parsed once). */
export function openGguf(file: string): { g: GgufFile; config: Record<string, unknown>; spec: ModelSpec } {
  const g = GgufFile.open(file);
  try {
    const config = configFromGguf(g);
    return { g, config, spec: specFromConfig(config, `${file} (metadata)`) };
  } catch (e) {
    g.close();
    throw e;
  }
}
