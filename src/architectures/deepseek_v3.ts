/**
 * DeepSeek-V3 / R1: MLA attention, sigmoid scores; selection on score + e_score_correction_bias within the best
 * topk_group groups (group score = sum of its top-2), weights from the unbiased scores, renormalised, × routed_scaling_factor.
 */
import { decoderModel, mla } from './_blocks.js';
import { deepseekFfn } from './_deepseek.js';
import type { FamilyDefinition } from './registry.js';
import type { RoutingSpec } from './types.js';

export const deepseekV3: FamilyDefinition = {
  modelType: 'deepseek_v3',
  build(cfg) {
    cfg.oneOf('scoring_func', ['sigmoid'], 'sigmoid');
    cfg.oneOf('topk_method', ['noaux_tc'], 'noaux_tc');
    const routing: RoutingSpec = {
      numExperts: cfg.int('n_routed_experts'),
      numExpertsUsed: cfg.int('num_experts_per_tok'),
      scoring: 'sigmoid',
      groups: { numGroups: cfg.int('n_group', 1), numGroupsUsed: cfg.int('topk_group', 1), groupScore: 'top2_sum', maskedScore: -Infinity },
      normalize: cfg.bool('norm_topk_prob', true),
      normalizeEps: 1e-20,
      scale: cfg.num('routed_scaling_factor', 1),
      hasCorrectionBias: true,
    };
    const layout = cfg.bool('rope_interleave', true) ? 'interleaved' : 'rotate_half';
    return decoderModel(cfg, 'deepseek_v3', mla(cfg, layout), (i) => deepseekFfn(cfg, i, routing, true));
  },
};
