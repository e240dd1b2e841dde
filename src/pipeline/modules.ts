/**
 * The quantizable linears of a decoder layer, in the order GPTQ's "true sequential" mode quantizes them. Each group
 * is quantized from Hessians collected with every earlier group of the layer already quantized:
 *   attention input (q/k/v; MLA q or q_a + kv_a) → MLA q_b / kv_b → o_proj → [router] → gate/up (experts,
 *   shared expert, dense MLP) → down_proj.
 * Routers, embeddings, norms and lm_head stay in the model dtype (as GPTQModel does) unless asked otherwise.
 */
import type { LayerSpec, ModelSpec } from '../architectures/types.js';

export interface LinearModule {
  /** Weight tensor name (`….weight`). */
  weight: string;
  /** Module prefix (weight name without `.weight`): GPTQ tensors are `<prefix>.qweight` etc. */
  prefix: string;
  /** Bias tensor name, if the linear has one. */
  bias: string | null;
  N: number;
  K: number;
  /** Hessian key in LayerHessians. */
  hessian: string;
  /** Which accumulated Hessian AGQ uses: plain Σxxᵀ or weighted Σc·xxᵀ (routed experts; Qwen2 gated shared expert). */
  agqWeighted: boolean;
  kind: 'attention' | 'router' | 'routed_expert' | 'shared_expert' | 'dense_mlp';
  expert?: number;
}

export interface ModuleGroup {
  name: string;
  modules: LinearModule[];
}

const prefixOf = (weight: string) => weight.replace(/\.weight$/, '');

export function layerModuleGroups(spec: ModelSpec, layer: LayerSpec, opts: { quantizeRouter: boolean }): ModuleGroup[] {
  const L = `layers.${layer.index}`;
  const H = spec.hiddenSize;
  const t = layer.attention;
  const a = spec.attention;
  const lin = (weight: string, N: number, K: number, hessian: string, kind: LinearModule['kind'], extra: Partial<LinearModule> = {}): LinearModule => ({
    weight,
    prefix: prefixOf(weight),
    bias: null,
    N,
    K,
    hessian,
    agqWeighted: false,
    kind,
    ...extra,
  });
  const groups: ModuleGroup[] = [];
  if (a.kind === 'mha') {
    const q = a.numHeads * a.headDim;
    const kv = a.numKvHeads * a.headDim;
    groups.push({
      name: 'qkv',
      modules: [
        lin(t['q']!, q, H, `${L}.attn_input`, 'attention', { bias: t['qBias'] ?? null }),
        lin(t['k']!, kv, H, `${L}.attn_input`, 'attention', { bias: t['kBias'] ?? null }),
        lin(t['v']!, kv, H, `${L}.attn_input`, 'attention', { bias: t['vBias'] ?? null }),
      ],
    });
    groups.push({ name: 'o', modules: [lin(t['o']!, H, q, `${L}.o_proj_input`, 'attention', { bias: t['oBias'] ?? null })] });
  } else {
    const dq = a.qkNopeHeadDim + a.qkRopeHeadDim;
    const first = [lin(t['kvA']!, a.kvLoraRank + a.qkRopeHeadDim, H, `${L}.attn_input`, 'attention')];
    if (a.qLoraRank === null) first.unshift(lin(t['q']!, a.numHeads * dq, H, `${L}.attn_input`, 'attention'));
    else first.unshift(lin(t['qA']!, a.qLoraRank, H, `${L}.attn_input`, 'attention'));
    groups.push({ name: 'q_kv_a', modules: first });
    const inner = [lin(t['kvB']!, a.numHeads * (a.qkNopeHeadDim + a.vHeadDim), a.kvLoraRank, `${L}.kv_b_proj_input`, 'attention')];
    if (a.qLoraRank !== null) inner.unshift(lin(t['qB']!, a.numHeads * dq, a.qLoraRank, `${L}.q_b_proj_input`, 'attention'));
    groups.push({ name: 'q_kv_b', modules: inner });
    groups.push({ name: 'o', modules: [lin(t['o']!, H, a.numHeads * a.vHeadDim, `${L}.o_proj_input`, 'attention')] });
  }
  const f = layer.ffn;
  if (f.kind === 'dense') {
    const I = f.intermediateSize;
    groups.push({
      name: 'gate_up',
      modules: [lin(f.tensors.gate, I, H, `${L}.ffn_input`, 'dense_mlp'), lin(f.tensors.up, I, H, `${L}.ffn_input`, 'dense_mlp')],
    });
    groups.push({ name: 'down', modules: [lin(f.tensors.down, H, I, `${L}.mlp.down_proj_input`, 'dense_mlp')] });
    return groups;
  }
  if (opts.quantizeRouter) {
    const routers = [lin(f.router, f.routing.numExperts, H, `${L}.ffn_input`, 'router')];
    if (f.shared?.gate) routers.push(lin(f.shared.gate, 1, H, `${L}.ffn_input`, 'router'));
    groups.push({ name: 'router', modules: routers });
  }
  const I = f.expertIntermediateSize;
  const gateUp: LinearModule[] = [];
  const down: LinearModule[] = [];
  for (let e = 0; e < f.routing.numExperts; e++) {
    const x = f.expert(e);
    const weighted = { agqWeighted: true, expert: e };
    gateUp.push(lin(x.gate, I, H, `${L}.experts.${e}.gate_up_input`, 'routed_expert', weighted));
    gateUp.push(lin(x.up, I, H, `${L}.experts.${e}.gate_up_input`, 'routed_expert', weighted));
    down.push(lin(x.down, H, I, `${L}.experts.${e}.down_input`, 'routed_expert', weighted));
  }
  if (f.shared) {
    const S = f.shared.intermediateSize;
    const gated = f.shared.gate !== null;
    const gu = gated ? `${L}.shared_expert.gate_up_input` : `${L}.ffn_input`;
    gateUp.push(lin(f.shared.tensors.gate, S, H, gu, 'shared_expert', { agqWeighted: gated }));
    gateUp.push(lin(f.shared.tensors.up, S, H, gu, 'shared_expert', { agqWeighted: gated }));
    down.push(lin(f.shared.tensors.down, H, S, `${L}.shared_expert.down_input`, 'shared_expert', { agqWeighted: gated }));
  }
  groups.push({ name: 'gate_up', modules: gateUp });
  groups.push({ name: 'down', modules: down });
  return groups;
}
