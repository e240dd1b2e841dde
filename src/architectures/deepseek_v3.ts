/**
 * DeepSeek-V3 / R1: MLA attention, sigmoid scores; selection on score + e_score_correction_bias within the best
 * topk_group groups (group score = sum of its top-2), weights from the unbiased scores, renormalised, × routed_scaling_factor.
 */
import { decoderModel, expertCounts, groupLimit, mla } from './_blocks.js';
import { deepseekFfn } from './_deepseek.js';
import type { FamilyDefinition } from './registry.js';
import type { RoutingSpec } from './types.js';

export const deepseekV3: FamilyDefinition = {
  modelType: 'deepseek_v3',
  aliases: { n_routed_experts: ['num_local_experts'] },
  build(cfg) {
    cfg.oneOf('scoring_func', ['sigmoid'], 'sigmoid');
    cfg.oneOf('topk_method', ['noaux_tc'], 'noaux_tc');
    const counts = expertCounts(cfg, 'n_routed_experts');
    // Missing routing keys take the defaults of transformers' DeepseekV3Config (the remote code's are the same).
    const routing: RoutingSpec = {
      ...counts,
      scoring: 'sigmoid',
      groups: groupLimit(cfg, counts, 'n_routed_experts', {
        groupScore: 'top2_sum',
        maskedScore: -Infinity,
        fallback: { numGroups: 8, numGroupsUsed: 4 },
      }),
      normalize: cfg.bool('norm_topk_prob', true),
      normalizeEps: 1e-20,
      scale: cfg.num('routed_scaling_factor', 2.5),
      hasCorrectionBias: true,
    };
    const layout = cfg.bool('rope_interleave', true) ? 'interleaved' : 'rotate_half';
    return decoderModel(cfg, 'deepseek_v3', mla(cfg, layout), (i) => deepseekFfn(cfg, i, routing, true));
  },
};
