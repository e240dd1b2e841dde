/** `moe-quant inspect`: what a checkpoint is, before any long run. Opening validates every tensor against config.json. */
import fs from 'node:fs';
import path from 'node:path';
import type { TensorKind } from '../architectures/shapes.js';
import { moeLayers } from '../architectures/types.js';
import { openModel } from './model.js';

export interface InspectResult {
  model: string;
  family: string;
  layers: { total: number; moe: number; dense: number };
  attention: string;
  experts: null | {
    routed: number;
    shared: number;
    top_k: number;
    scoring: string;
    selection: string;
    normalize: boolean;
    scale: number;
    expert_intermediate_size: number;
  };
  hidden_size: number;
  vocab_size: number;
  parameters: { total: number; by_kind: Partial<Record<TensorKind, number>> };
  dtypes: Record<string, number>;
  files: string[];
  size_on_disk_bytes: number;
}

export function inspectModel(dir: string): InspectResult {
  const model = openModel(dir);
  try {
    const { spec, expected, checkpoint } = model;
    const moe = moeLayers(spec);
    const byKind: Partial<Record<TensorKind, number>> = {};
    const dtypes: Record<string, number> = {};
    let total = 0;
    for (const t of expected) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      byKind[t.kind] = (byKind[t.kind] ?? 0) + n;
      const dt = model.packed.has(t.name) ? `GPTQ ${model.gptq!.bits}-bit` : model.gguf ? `GGUF ${model.gguf.ggufType(t.name)}` : checkpoint.info(t.name).dtype;
      dtypes[dt] = (dtypes[dt] ?? 0) + n;
      total += n;
    }
    const first = moe[0]?.ffn;
    const a = spec.attention;
    const attention =
      a.kind === 'mha'
        ? `${a.numKvHeads < a.numHeads ? 'GQA' : 'MHA'} ${a.numHeads} heads / ${a.numKvHeads} kv heads × ${a.headDim}` +
          (a.qkNorm !== 'none' ? `, q/k norm (${a.qkNorm})` : '') +
          (a.qkvBias ? ', qkv bias' : '')
        : `MLA ${a.numHeads} heads, kv_lora_rank ${a.kvLoraRank}, q_lora_rank ${a.qLoraRank ?? 'none'}, nope ${a.qkNopeHeadDim} + rope ${a.qkRopeHeadDim}, v ${a.vHeadDim}`;
    const files = checkpoint.files.map((f) => path.basename(f));
    return {
      model: path.resolve(dir),
      family: spec.family,
      layers: { total: spec.numLayers, moe: moe.length, dense: spec.numLayers - moe.length },
      attention,
      experts: first
        ? {
            routed: first.routing.numExperts,
            shared: first.shared ? 1 : 0,
            top_k: first.routing.numExpertsUsed,
            scoring: first.routing.scoring + (first.routing.hasCorrectionBias ? ' + e_score_correction_bias (selection only)' : ''),
            selection: first.routing.groups
              ? `group-limited: ${first.routing.groups.numGroupsUsed} of ${first.routing.groups.numGroups} groups (group score ${first.routing.groups.groupScore})`
              : 'top-k',
            normalize: first.routing.normalize,
            scale: first.routing.scale,
            expert_intermediate_size: first.expertIntermediateSize,
          }
        : null,
      hidden_size: spec.hiddenSize,
      vocab_size: spec.vocabSize,
      parameters: { total, by_kind: byKind },
      dtypes,
      files,
      size_on_disk_bytes: checkpoint.files.reduce((s, f) => s + fs.statSync(f).size, 0),
    };
  } finally {
    model.checkpoint.close();
  }
}
