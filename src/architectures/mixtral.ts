/** Mixtral: GQA attention, every layer MoE, softmax over all experts → top-k → always renormalised. */
import { decoderModel, expertCounts, mha, moeFfn, softmaxRouting } from './_blocks.js';
import type { FamilyDefinition } from './registry.js';

export const mixtral: FamilyDefinition = {
  modelType: 'mixtral',
  aliases: { num_local_experts: ['num_experts'] },
  build(cfg) {
    const routing = softmaxRouting(expertCounts(cfg, 'num_local_experts'), true);
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
