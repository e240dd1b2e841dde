/** Qwen2-MoE / Qwen3-MoE share the rule for which layers are sparse. */
import { fail } from '../errors.js';
import type { ConfigReader } from './_config.js';

/** Qwen's use_sliding_window applies a window only to some layers (max_window_layers); not implemented. */
export function rejectQwenSlidingWindow(cfg: ConfigReader): void {
  if (cfg.bool('use_sliding_window', false))
    throw fail('UNSUPPORTED', `${cfg.source}: use_sliding_window = true (per-layer sliding-window attention) is not supported`);
}

/** `layer_idx not in mlp_only_layers and num_experts > 0 and (layer_idx + 1) % decoder_sparse_step == 0`. */
export function qwenIsMoeLayer(cfg: ConfigReader, i: number): boolean {
  const step = cfg.int('decoder_sparse_step', 1);
  return !cfg.intList('mlp_only_layers').includes(i) && cfg.int('num_experts', 0, 0) > 0 && (i + 1) % step === 0;
}
