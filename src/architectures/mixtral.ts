/** Mixtral: GQA attention, every layer MoE, softmax over all experts → top-k → always renormalised. */
import { decoderModel, mha, moeFfn, softmaxRouting } from './_blocks.js';
import type { FamilyDefinition } from './registry.js';

export const mixtral: FamilyDefinition = {
  modelType: 'mixtral',
  build(cfg) {
    const routing = softmaxRouting(cfg.int('num_local_experts'), cfg.int('num_experts_per_tok'), true);
    // sliding_window (null in released Mixtral configs): each query attends to at most that many recent keys.
    const window = cfg.has('sliding_window') ? cfg.int('sliding_window') : null;
    return decoderModel(cfg, 'mixtral', mha(cfg, { slidingWindow: window }), (i) =>
      moeFfn(i, {
        prefix: 'block_sparse_moe',
        routing,
        expertIntermediateSize: cfg.int('intermediate_size'),
        expertNames: { gate: 'w1', up: 'w3', down: 'w2' },
      }),
    );
  },
};
