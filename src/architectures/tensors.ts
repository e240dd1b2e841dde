/**
 * Every tensor of a model, once, in model order: its Hugging Face name, shape and kind, its llama.cpp (GGUF) name,
 * and for a linear the input it reads (the Hessian the quantizer solves with) and its module group. The checkpoint
 * check (shapes.ts), the quantize plan (pipeline/modules.ts) and the GGUF writer/reader (formats/gguf/arch.ts)
 * all read this table instead of each re-deriving names and shapes from the ModelSpec.
 */
import type { LayerSpec, MlpTensors, ModelSpec } from './types.js';

export type TensorKind = 'embedding' | 'lm_head' | 'norm' | 'attention' | 'router' | 'routed_expert' | 'shared_expert' | 'dense_mlp';

/**
 * Quantize module groups of a layer, in the order GPTQ's "true sequential" mode quantizes them: attention input
 * (q/k/v; MLA q or q_a + kv_a) → MLA q_b / kv_b → o_proj → [router] → gate/up → down.
 */
export const MODULE_GROUPS = ['qkv', 'q_kv_a', 'q_kv_b', 'o', 'router', 'gate_up', 'down'] as const;
export type ModuleGroupName = (typeof MODULE_GROUPS)[number];

/** A linear's place in quantization: what it reads and how its Hessian is weighted. */
export interface LinearInfo {
  group: ModuleGroupName;
  /** Hessian key in LayerHessians: the activation this linear multiplies. */
  hessian: string;
  /** The captured activation (ActivationsEvent.inputs) that feeds that Hessian. */
  source: string;
  /** Rows weighted by the expert's affinity, or by Qwen2-MoE's sigmoid shared-expert gate. */
  weightBy?: 'affinity' | 'shared_gate';
  /** AGQ: the affinity-weighted Σc·xxᵀ (routed experts; Qwen2-MoE's gated shared expert) instead of Σxxᵀ. */
  agqWeighted: boolean;
  /** Bias tensor name, if the linear has one. */
  bias: string | null;
}

export interface TensorEntry {
  /** Hugging Face tensor name. */
  name: string;
  /** PyTorch shape ([out, in] for a linear). */
  shape: number[];
  kind: TensorKind;
  /** Decoder layer index, or null for embeddings/head/final norm. */
  layer: number | null;
  /** Routed expert index. */
  expert?: number;
  /**
   * llama.cpp's tensor name (`blk.N.` prefix included), or null for a tensor llama.cpp stores transformed under
   * other names (MLA kv_b → attn_k_b + attn_v_b). Routed experts of a layer share one stacked tensor.
   */
  gguf: string | null;
  /** Set for the linears moe-quant can quantize. */
  linear?: LinearInfo;
}

function mlp(
  out: TensorEntry[],
  t: MlpTensors,
  H: number,
  I: number,
  kind: TensorKind,
  layer: number,
  gguf: { gate: string; up: string; down: string },
  inputs: { gateUp: string; down: string; downSource: string; weightBy?: LinearInfo['weightBy'] },
  expert?: number,
): void {
  const w = inputs.weightBy ? { weightBy: inputs.weightBy } : {};
  const lin = (group: ModuleGroupName, hessian: string): LinearInfo => ({
    group,
    hessian,
    source: group === 'down' ? inputs.downSource : 'ffn',
    ...w,
    agqWeighted: inputs.weightBy !== undefined,
    bias: null,
  });
  const e = expert === undefined ? {} : { expert };
  out.push({ name: t.gate, shape: [I, H], kind, layer, ...e, gguf: gguf.gate, linear: lin('gate_up', inputs.gateUp) });
  out.push({ name: t.up, shape: [I, H], kind, layer, ...e, gguf: gguf.up, linear: lin('gate_up', inputs.gateUp) });
  out.push({ name: t.down, shape: [H, I], kind, layer, ...e, gguf: gguf.down, linear: lin('down', inputs.down) });
}

/** The table of one decoder layer, in checkpoint order. */
export function layerTensors(spec: ModelSpec, layer: LayerSpec): TensorEntry[] {
  const H = spec.hiddenSize;
  const L = layer.index;
  const b = `blk.${L}.`;
  const key = `layers.${L}`;
  const a = spec.attention;
  const t = layer.attention;
  const out: TensorEntry[] = [];
  const add = (role: string, shape: number[], gguf: string | null, kind: TensorKind = 'attention', linear?: Omit<LinearInfo, 'bias' | 'agqWeighted'> & { bias?: string | undefined }) => {
    const name = t[role];
    if (!name) return;
    out.push({ name, shape, kind, layer: L, gguf: gguf && b + gguf, ...(linear ? { linear: { ...linear, agqWeighted: false, bias: linear.bias ?? null } } : {}) });
  };
  add('inputNorm', [H], 'attn_norm.weight', 'norm');
  if (a.kind === 'mha') {
    const q = a.numHeads * a.headDim;
    const kv = a.numKvHeads * a.headDim;
    const input = `${key}.attn_input`;
    add('q', [q, H], 'attn_q.weight', 'attention', { group: 'qkv', hessian: input, source: 'attn', bias: t['qBias'] });
    add('k', [kv, H], 'attn_k.weight', 'attention', { group: 'qkv', hessian: input, source: 'attn', bias: t['kBias'] });
    add('v', [kv, H], 'attn_v.weight', 'attention', { group: 'qkv', hessian: input, source: 'attn', bias: t['vBias'] });
    add('qBias', [q], 'attn_q.bias');
    add('kBias', [kv], 'attn_k.bias');
    add('vBias', [kv], 'attn_v.bias');
    add('o', [H, q], 'attn_output.weight', 'attention', { group: 'o', hessian: `${key}.o_proj_input`, source: 'o', bias: t['oBias'] });
    add('oBias', [H], 'attn_output.bias');
    add('qNorm', [a.qkNorm === 'per_head' ? a.headDim : q], 'attn_q_norm.weight', 'norm');
    add('kNorm', [a.qkNorm === 'per_head' ? a.headDim : kv], 'attn_k_norm.weight', 'norm');
  } else {
    const dq = a.qkNopeHeadDim + a.qkRopeHeadDim;
    const input = `${key}.attn_input`;
    add('q', [a.numHeads * dq, H], 'attn_q.weight', 'attention', { group: 'q_kv_a', hessian: input, source: 'attn' });
    if (a.qLoraRank !== null) {
      add('qA', [a.qLoraRank, H], 'attn_q_a.weight', 'attention', { group: 'q_kv_a', hessian: input, source: 'attn' });
      add('qANorm', [a.qLoraRank], 'attn_q_a_norm.weight', 'norm');
      add('qB', [a.numHeads * dq, a.qLoraRank], 'attn_q_b.weight', 'attention', { group: 'q_kv_b', hessian: `${key}.q_b_proj_input`, source: 'qB' });
    }
    add('kvA', [a.kvLoraRank + a.qkRopeHeadDim, H], 'attn_kv_a_mqa.weight', 'attention', { group: 'q_kv_a', hessian: input, source: 'attn' });
    add('kvANorm', [a.kvLoraRank], 'attn_kv_a_norm.weight', 'norm');
    add('kvB', [a.numHeads * (a.qkNopeHeadDim + a.vHeadDim), a.kvLoraRank], null, 'attention', { group: 'q_kv_b', hessian: `${key}.kv_b_proj_input`, source: 'kvB' });
    add('o', [H, a.numHeads * a.vHeadDim], 'attn_output.weight', 'attention', { group: 'o', hessian: `${key}.o_proj_input`, source: 'o' });
  }
  add('postAttentionNorm', [H], 'ffn_norm.weight', 'norm');
  const f = layer.ffn;
  const ffnInput = `${key}.ffn_input`;
  if (f.kind === 'dense') {
    const g = { gate: `${b}ffn_gate.weight`, up: `${b}ffn_up.weight`, down: `${b}ffn_down.weight` };
    mlp(out, f.tensors, H, f.intermediateSize, 'dense_mlp', L, g, { gateUp: ffnInput, down: `${key}.mlp.down_proj_input`, downSource: 'dense.down' });
    return out;
  }
  const E = f.routing.numExperts;
  const router: LinearInfo = { group: 'router', hessian: ffnInput, source: 'ffn', agqWeighted: false, bias: null };
  out.push({ name: f.router, shape: [E, H], kind: 'router', layer: L, gguf: `${b}ffn_gate_inp.weight`, linear: router });
  if (f.correctionBias) out.push({ name: f.correctionBias, shape: [E], kind: 'router', layer: L, gguf: `${b}exp_probs_b.bias` });
  const exps = { gate: `${b}ffn_gate_exps.weight`, up: `${b}ffn_up_exps.weight`, down: `${b}ffn_down_exps.weight` };
  for (let e = 0; e < E; e++) {
    const x = `${key}.experts.${e}`;
    mlp(out, f.expert(e), H, f.expertIntermediateSize, 'routed_expert', L, exps, { gateUp: `${x}.gate_up_input`, down: `${x}.down_input`, downSource: `expert.${e}.down`, weightBy: 'affinity' }, e);
  }
  if (f.shared) {
    const gated = f.shared.gate !== null;
    const g = { gate: `${b}ffn_gate_shexp.weight`, up: `${b}ffn_up_shexp.weight`, down: `${b}ffn_down_shexp.weight` };
    const inputs = { gateUp: gated ? `${key}.shared_expert.gate_up_input` : ffnInput, down: `${key}.shared_expert.down_input`, downSource: 'shared.down', ...(gated ? { weightBy: 'shared_gate' as const } : {}) };
    mlp(out, f.shared.tensors, H, f.shared.intermediateSize, 'shared_expert', L, g, inputs);
    if (f.shared.gate) out.push({ name: f.shared.gate, shape: [1, H], kind: 'router', layer: L, gguf: `${b}ffn_gate_inp_shexp.weight`, linear: router });
  }
  return out;
}

/** The whole table, in model order: embedding, each layer, final norm, untied lm_head. */
export function modelTensors(spec: ModelSpec): TensorEntry[] {
  const H = spec.hiddenSize;
  const out: TensorEntry[] = [{ name: spec.embedTokens, shape: [spec.vocabSize, H], kind: 'embedding', layer: null, gguf: 'token_embd.weight' }];
  for (const layer of spec.layers) out.push(...layerTensors(spec, layer));
  out.push({ name: spec.finalNorm, shape: [H], kind: 'norm', layer: null, gguf: 'output_norm.weight' });
  if (spec.lmHead !== spec.embedTokens) out.push({ name: spec.lmHead, shape: [spec.vocabSize, H], kind: 'lm_head', layer: null, gguf: 'output.weight' });
  return out;
}
