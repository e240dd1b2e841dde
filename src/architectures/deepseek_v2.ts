/**
 * DeepSeek-V2 / V2-Lite: MLA attention with interleaved RoPE, softmax router, "greedy" or "group_limited_greedy"
 * (group score = max) selection. As in the remote code, routed_scaling_factor applies only when not renormalising.
 */
import { decoderModel, mla, softmaxRouting } from './_blocks.js';
import { deepseekFfn } from './_deepseek.js';
import type { FamilyDefinition } from './registry.js';

export const deepseekV2: FamilyDefinition = {
  modelType: 'deepseek_v2',
  build(cfg) {
    cfg.oneOf('scoring_func', ['softmax'], 'softmax');
    const method = cfg.oneOf('topk_method', ['greedy', 'gready', 'group_limited_greedy'], 'greedy');
    const normalize = cfg.bool('norm_topk_prob', false);
    const routing = {
      ...softmaxRouting(cfg.int('n_routed_experts'), cfg.int('num_experts_per_tok'), normalize, 1e-20),
      scale: normalize ? 1 : cfg.num('routed_scaling_factor', 1),
      groups:
        method === 'group_limited_greedy'
          ? { numGroups: cfg.int('n_group'), numGroupsUsed: cfg.int('topk_group'), groupScore: 'max' as const, maskedScore: 0 }
          : null,
    };
    return decoderModel(cfg, 'deepseek_v2', mla(cfg, 'interleaved'), (i) => deepseekFfn(cfg, i, routing, false));
  },
};
