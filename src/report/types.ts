/**
 * balance-report.json: how a calibration run routed its tokens, per MoE layer and expert, for the routing the model
 * makes on its own ("natural") and the routing actually used (with the loss-free selection bias, if any).
 *
 * Definitions (stated in the report too):
 * - tokens[e]: (token, slot) assignments to expert e; Σ tokens = tokens × top_k.
 * - share[e] = tokens[e] / Σ tokens (usage frequency u_e, sums to 1).
 * - MaxVio = (max load − mean load) / mean load, mean load = Σ tokens / experts (Wang et al. 2024, Eq. 4).
 * - σ = sample standard deviation (denominator experts − 1) of share[e] within a layer (MoEQuant Eq. 3–4); the
 *   summary averages it over layers.
 * - entropy = −Σ share·ln(share) / ln(experts), 1 = perfectly balanced.
 * - affinity: c = the weight the model multiplies the expert's output by (after renormalisation and scaling).
 */

export const BALANCE_REPORT_FORMAT = 'moe-quant.balance-report/1';

/** Aggregate balance numbers. */
export interface BalanceSummary {
  maxvio: number;
  sigma: number;
  /** Fewest tokens any expert received. */
  min_tokens: number;
}

export interface BalanceStats extends BalanceSummary {
  tokens: number[];
  share: number[];
  affinity_mass: number[];
  mean_affinity: number[];
  entropy: number;
}

export interface LayerBalance {
  layer: number;
  experts: number;
  top_k: number;
  natural: BalanceStats;
  used: BalanceStats;
  /** Same tokens, second half of the batches only. */
  natural_second_half: BalanceSummary;
  used_second_half: BalanceSummary;
  /** Experts that received fewer than `min_tokens_threshold` tokens under the routing used. */
  under_calibrated: number[];
  /** Final calibration bias δ per expert (zeros without loss-free routing). */
  bias: number[];
  /** δ after each batch: [batches][experts]. */
  bias_trajectory: number[][];
}

export interface BalanceReport {
  format: typeof BALANCE_REPORT_FORMAT;
  model: string;
  model_type: string;
  data: string[];
  samples: number;
  seq_len: number;
  tokens: number;
  seed: number;
  routing_bias: 'none' | 'loss-free';
  bias_rate: number;
  bias_update: 'quantile' | 'sign' | 'linear';
  batches: number;
  min_tokens_threshold: number;
  /** Human-readable statement of the definitions above. */
  definitions: string;
  layers: LayerBalance[];
  summary: {
    natural: BalanceSummary;
    used: BalanceSummary;
    natural_second_half: BalanceSummary;
    used_second_half: BalanceSummary;
  };
}
