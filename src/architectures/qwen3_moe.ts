/** Qwen3-MoE: Qwen2-MoE without the shared expert, no q/k/v bias, and RMSNorm on each q/k head before RoPE. */
import { decoderModel, denseFfn, expertCounts, mha, moeFfn, softmaxRouting } from './_blocks.js';
import { qwenIsMoeLayer, rejectQwenSlidingWindow } from './_qwen.js';
import type { FamilyDefinition } from './registry.js';

export const qwen3Moe: FamilyDefinition = {
  modelType: 'qwen3_moe',
  // transformers 5 saves the expert count as num_local_experts; 4.x and Hub files have num_experts.
  aliases: { num_experts: ['num_local_experts'] },
  build(cfg) {
    rejectQwenSlidingWindow(cfg);
    const routing = softmaxRouting(expertCounts(cfg, 'num_experts'), cfg.bool('norm_topk_prob', false));
    const bias = cfg.bool('attention_bias', false);
    const attention = mha(cfg, { qkvBias: bias, oBias: bias, qkNorm: 'per_head' });
    return decoderModel(cfg, 'qwen3_moe', attention, (i) =>
      qwenIsMoeLayer(cfg, i)
        ? moeFfn(i, { prefix: 'mlp', routing, expertIntermediateSize: cfg.int('moe_intermediate_size') })
        : denseFfn(i, cfg.int('intermediate_size')),
    );
  },
};
