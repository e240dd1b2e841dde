/**
 * The tensors a ModelSpec expects, with their shapes and kinds. Used to validate a checkpoint against config.json
 * before any long run, and by `inspect` to count parameters by kind.
 */
import type { ModelSpec, MlpTensors } from './types.js';

export type TensorKind =
  | 'embedding'
  | 'lm_head'
  | 'norm'
  | 'attention'
  | 'router'
  | 'routed_expert'
  | 'shared_expert'
  | 'dense_mlp';

export interface ExpectedTensor {
  name: string;
  shape: number[];
  kind: TensorKind;
  /** Decoder layer index, or null for embeddings/head/final norm. */
  layer: number | null;
}

function mlp(out: ExpectedTensor[], t: MlpTensors, H: number, I: number, kind: TensorKind, layer: number): void {
  out.push({ name: t.gate, shape: [I, H], kind, layer });
  out.push({ name: t.up, shape: [I, H], kind, layer });
  out.push({ name: t.down, shape: [H, I], kind, layer });
}

/** Every tensor the engine will read, in model order. */
export function expectedTensors(spec: ModelSpec): ExpectedTensor[] {
  const H = spec.hiddenSize;
  const out: ExpectedTensor[] = [{ name: spec.embedTokens, shape: [spec.vocabSize, H], kind: 'embedding', layer: null }];
  const a = spec.attention;
  for (const layer of spec.layers) {
    const L = layer.index;
    const t = layer.attention;
    const add = (role: string, shape: number[], kind: TensorKind = 'attention') => {
      const name = t[role];
      if (name) out.push({ name, shape, kind, layer: L });
    };
    add('inputNorm', [H], 'norm');
    if (a.kind === 'mha') {
      const q = a.numHeads * a.headDim;
      const kv = a.numKvHeads * a.headDim;
      add('q', [q, H]);
      add('k', [kv, H]);
      add('v', [kv, H]);
      add('qBias', [q]);
      add('kBias', [kv]);
      add('vBias', [kv]);
      add('o', [H, q]);
      add('oBias', [H]);
      add('qNorm', [a.qkNorm === 'per_head' ? a.headDim : q], 'norm');
      add('kNorm', [a.qkNorm === 'per_head' ? a.headDim : kv], 'norm');
    } else {
      const dq = a.qkNopeHeadDim + a.qkRopeHeadDim;
      add('q', [a.numHeads * dq, H]);
      if (a.qLoraRank !== null) {
        add('qA', [a.qLoraRank, H]);
        add('qANorm', [a.qLoraRank], 'norm');
        add('qB', [a.numHeads * dq, a.qLoraRank]);
      }
      add('kvA', [a.kvLoraRank + a.qkRopeHeadDim, H]);
      add('kvANorm', [a.kvLoraRank], 'norm');
      add('kvB', [a.numHeads * (a.qkNopeHeadDim + a.vHeadDim), a.kvLoraRank]);
      add('o', [H, a.numHeads * a.vHeadDim]);
    }
    add('postAttentionNorm', [H], 'norm');
    const f = layer.ffn;
    if (f.kind === 'dense') {
      mlp(out, f.tensors, H, f.intermediateSize, 'dense_mlp', L);
    } else {
      out.push({ name: f.router, shape: [f.routing.numExperts, H], kind: 'router', layer: L });
      if (f.correctionBias) out.push({ name: f.correctionBias, shape: [f.routing.numExperts], kind: 'router', layer: L });
      for (let e = 0; e < f.routing.numExperts; e++) mlp(out, f.expert(e), H, f.expertIntermediateSize, 'routed_expert', L);
      if (f.shared) {
        mlp(out, f.shared.tensors, H, f.shared.intermediateSize, 'shared_expert', L);
        if (f.shared.gate) out.push({ name: f.shared.gate, shape: [1, H], kind: 'router', layer: L });
      }
    }
  }
  out.push({ name: spec.finalNorm, shape: [H], kind: 'norm', layer: null });
  if (spec.lmHead !== spec.embedTokens) out.push({ name: spec.lmHead, shape: [spec.vocabSize, H], kind: 'lm_head', layer: null });
  return out;
}
