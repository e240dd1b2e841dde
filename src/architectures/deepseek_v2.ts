/**
 * DeepSeek-V2 / V2-Lite: MLA attention with interleaved RoPE, softmax router, "greedy" or "group_limited_greedy"
 * (group score = max) selection. As in the remote code, routed_scaling_factor applies only when not renormalising.
 */
import { decoderModel, expertCounts, groupLimit, mla, softmaxRouting } from './_blocks.js';
import { deepseekFfn } from './_deepseek.js';
import type { FamilyDefinition } from './registry.js';

export const deepseekV2: FamilyDefinition = {
  modelType: 'deepseek_v2',
  aliases: { n_routed_experts: ['num_experts'] },
  build(cfg) {
    cfg.oneOf('scoring_func', ['softmax'], 'softmax');
    const method = cfg.oneOf('topk_method', ['greedy', 'gready', 'group_limited_greedy'], 'greedy');
    const counts = expertCounts(cfg, 'n_routed_experts');
    // The remote MoEGate renormalises only when top_k > 1 (and then does not scale).
    const normalize = cfg.bool('norm_topk_prob', false) && counts.numExpertsUsed > 1;
    const routing = {
      ...softmaxRouting(counts, normalize, 1e-20),
      scale: normalize ? 1 : cfg.num('routed_scaling_factor', 1),
      groups:
        method === 'group_limited_greedy'
          ? groupLimit(cfg, counts, 'n_routed_experts', { groupScore: 'max', maskedScore: 0 })
          : null,
    };
    return decoderModel(cfg, 'deepseek_v2', mla(cfg, 'interleaved'), (i) => deepseekFfn(cfg, i, routing, false));
  },
};
