/** What DeepSeek V1/V2/V3 share: dense first layers, merged ungated shared experts, MoE layer rule. */
import { denseFfn, layerPrefix, mlpTensors, moeFfn, PROJ_NAMES } from './_blocks.js';
import type { ConfigReader } from './_config.js';
import type { FfnSpec, RoutingSpec } from './types.js';

/** Remote-code rule: MoE iff n_routed_experts set, layer ≥ first_k_dense_replace and layer % moe_layer_freq == 0. */
export function deepseekIsMoeLayer(cfg: ConfigReader, i: number): boolean {
  return (
    cfg.int('n_routed_experts', 0, 0) > 0 &&
    i >= cfg.int('first_k_dense_replace', 0, 0) &&
    i % cfg.int('moe_layer_freq', 1) === 0
  );
}

export function deepseekFfn(cfg: ConfigReader, i: number, routing: RoutingSpec, correctionBias: boolean): FfnSpec {
  if (!deepseekIsMoeLayer(cfg, i)) return denseFfn(i, cfg.int('intermediate_size'));
  const moeI = cfg.int('moe_intermediate_size');
  const numShared = cfg.int('n_shared_experts', 0, 0);
  return moeFfn(i, {
    prefix: 'mlp',
    routing,
    expertIntermediateSize: moeI,
    correctionBias,
    shared:
      numShared > 0
        ? { intermediateSize: moeI * numShared, tensors: mlpTensors(`${layerPrefix(i)}.mlp.shared_experts`, PROJ_NAMES), gate: null }
        : null,
  });
}
