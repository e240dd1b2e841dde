/**
 * Qwen1.5/Qwen2-MoE: q/k/v biases, softmax top-k (renormalised only if norm_topk_prob), plus one shared expert
 * scaled per token by sigmoid(shared_expert_gate · x).
 */
import { decoderModel, denseFfn, expertCounts, layerPrefix, mha, mlpTensors, moeFfn, PROJ_NAMES, softmaxRouting } from './_blocks.js';
import { qwenIsMoeLayer, rejectQwenSlidingWindow } from './_qwen.js';
import type { FamilyDefinition } from './registry.js';

export const qwen2Moe: FamilyDefinition = {
  modelType: 'qwen2_moe',
  // Qwen2MoeConfig has no attribute_map: num_local_experts is not read (transformers falls back to 60 experts).
  build(cfg) {
    rejectQwenSlidingWindow(cfg);
    const routing = softmaxRouting(expertCounts(cfg, 'num_experts'), cfg.bool('norm_topk_prob', false));
    const attention = mha(cfg, { qkvBias: cfg.bool('qkv_bias', true) });
    return decoderModel(cfg, 'qwen2_moe', attention, (i) =>
      qwenIsMoeLayer(cfg, i)
        ? moeFfn(i, {
            prefix: 'mlp',
            routing,
            expertIntermediateSize: cfg.int('moe_intermediate_size'),
            shared: {
              intermediateSize: cfg.int('shared_expert_intermediate_size'),
              tensors: mlpTensors(`${layerPrefix(i)}.mlp.shared_expert`, PROJ_NAMES),
              gate: `${layerPrefix(i)}.mlp.shared_expert_gate.weight`,
            },
          })
        : denseFfn(i, cfg.int('intermediate_size')),
    );
  },
};
