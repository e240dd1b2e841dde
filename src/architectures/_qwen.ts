/** Qwen2-MoE / Qwen3-MoE share the rule for which layers are sparse. */
import type { ConfigReader } from './_config.js';

/** `layer_idx not in mlp_only_layers and num_experts > 0 and (layer_idx + 1) % decoder_sparse_step == 0`. */
export function qwenIsMoeLayer(cfg: ConfigReader, i: number): boolean {
  const step = cfg.int('decoder_sparse_step', 1);
  return !cfg.intList('mlp_only_layers').includes(i) && cfg.int('num_experts', 0, 0) > 0 && (i + 1) % step === 0;
}
