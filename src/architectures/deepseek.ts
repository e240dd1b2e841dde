/**
 * DeepSeek-MoE V1 (remote code `modeling_deepseek.py`): MHA attention, softmax router, shared experts ungated.
 * The original computes the router softmax in the model dtype; we compute in float32 like every other family.
 */
import { decoderModel, expertCounts, mha, softmaxRouting } from './_blocks.js';
import { deepseekFfn } from './_deepseek.js';
import type { FamilyDefinition } from './registry.js';

export const deepseek: FamilyDefinition = {
  modelType: 'deepseek',
  build(cfg) {
    cfg.oneOf('scoring_func', ['softmax'], 'softmax');
    const counts = expertCounts(cfg, 'n_routed_experts');
    // The remote MoEGate renormalises only when top_k > 1.
    const routing = softmaxRouting(counts, cfg.bool('norm_topk_prob', false) && counts.numExpertsUsed > 1, 1e-20);
    const bias = cfg.bool('attention_bias', false);
    return decoderModel(cfg, 'deepseek', mha(cfg, { qkvBias: bias, oBias: bias }), (i) => deepseekFfn(cfg, i, routing, false));
  },
};
