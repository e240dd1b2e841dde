/** OLMoE: RMSNorm over the whole q/k projection (not per head), optional clip_qkv, softmax top-k. */
import { decoderModel, expertCounts, mha, moeFfn, softmaxRouting } from './_blocks.js';
import type { FamilyDefinition } from './registry.js';

export const olmoe: FamilyDefinition = {
  modelType: 'olmoe',
  aliases: { num_experts: ['num_local_experts'] },
  build(cfg) {
    const routing = softmaxRouting(expertCounts(cfg, 'num_experts'), cfg.bool('norm_topk_prob', false));
    const bias = cfg.bool('attention_bias', false);
    const clip = cfg.has('clip_qkv') ? cfg.num('clip_qkv') : null;
    const attention = mha(cfg, { qkvBias: bias, oBias: bias, qkNorm: 'full', clipQkv: clip });
    return decoderModel(cfg, 'olmoe', attention, (i) =>
      moeFfn(i, { prefix: 'mlp', routing, expertIntermediateSize: cfg.int('intermediate_size') }),
    );
  },
};
