/**
 * Synthetic, self-consistent balance reports for the report tests: token counts drawn from a seeded PRNG, every
 * metric computed from them with the definitions in src/report/types.ts.
 */
import { BALANCE_REPORT_FORMAT, type BalanceReport, type BalanceStats, type BalanceSummary, type LayerBalance } from '../../src/report/types.js';
import { normalSampler, seededRandom as rng } from '../../src/calibration/samples.js';
import { averageSummaries, balanceStats, summarize } from '../../src/routing/balance.js';

export const NASTY_MODEL = '/models/<script>alert("x")</script>&"tiny" \'moe\'';
export const NASTY_DATA = '/data/a&b <c> "d".txt';

export const DEFINITIONS = [
  'tokens[e]: (token, slot) assignments to expert e; Σ tokens = tokens × top_k.',
  'share[e] = tokens[e] / Σ tokens (usage frequency u_e, sums to 1).',
  'MaxVio = (max load − mean load) / mean load, mean load = Σ tokens / experts (Wang et al. 2024, Eq. 4).',
  'σ = sample standard deviation (denominator experts − 1) of share[e] within a layer (MoEQuant Eq. 3–4); the summary averages it over layers.',
  'entropy = −Σ share·ln(share) / ln(experts), 1 = perfectly balanced.',
  'affinity: c = the weight the model multiplies the expert\'s output by (after renormalisation and scaling).',
].join('\n');



/** Integer counts summing to `total`, proportional to `weights` (largest remainder). */
function apportion(weights: number[], total: number): number[] {
  const sum = weights.reduce((a, b) => a + b, 0);
  const exact = weights.map((w) => (sum > 0 ? (w / sum) * total : 0));
  const out = exact.map(Math.floor);
  let left = total - out.reduce((a, b) => a + b, 0);
  const order = exact.map((x, i) => [x - Math.floor(x), i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (let k = 0; left > 0 && order.length > 0; k++, left--) out[order[k % order.length]![1]]! += 1;
  return out;
}

/** Per-expert statistics with the engine's own definitions; affinities are random. */
function stats(tokens: number[], r: () => number): BalanceStats {
  const meanAffinity = tokens.map((t) => (t > 0 ? 0.15 + 0.3 * r() : 0));
  return balanceStats(tokens, tokens.map((t, e) => t * meanAffinity[e]!));
}

export interface SyntheticOptions {
  layers: number;
  experts: number;
  topK?: number;
  samples?: number;
  seqLen?: number;
  batches?: number;
  seed?: number;
  /** Log-normal spread of the natural routing (0 = uniform). */
  skew?: number;
  /** Experts (per layer index) that get no tokens under the routing used. */
  zero?: Record<number, number[]>;
  /** Experts (per layer index) with only a few tokens under the routing used. */
  few?: Record<number, number[]>;
  routingBias?: 'none' | 'loss-free';
  model?: string;
  data?: string[];
  minTokensThreshold?: number;
  firstLayer?: number;
}

export function syntheticReport(o: SyntheticOptions): BalanceReport {
  const r = rng(o.seed ?? 1);
  const gauss = normalSampler(r);
  const topK = o.topK ?? 2;
  const samples = o.samples ?? 16;
  const seqLen = o.seqLen ?? 128;
  const batches = o.batches ?? 8;
  const tokens = samples * seqLen;
  const slots = tokens * topK;
  const skew = o.skew ?? 0.8;
  const bias = o.routingBias ?? 'loss-free';
  const threshold = o.minTokensThreshold ?? 16;
  const E = o.experts;
  const layers: LayerBalance[] = [];
  for (let i = 0; i < o.layers; i++) {
    const natW = Array.from({ length: E }, () => Math.exp(skew * gauss()));
    const usedW = bias === 'loss-free' ? natW.map((w) => Math.pow(w, 0.25)) : natW.slice();
    const zero = o.zero?.[i] ?? [];
    const few = o.few?.[i] ?? [];
    for (const e of zero) usedW[e] = 0;
    for (const e of zero) natW[e] = 0;
    for (const e of few) usedW[e] = 0;
    const natural = apportion(natW, slots);
    const used = apportion(usedW, slots - few.length * 3);
    for (const e of few) used[e] = 3;
    const half = (t: number[]) => apportion(t, Math.floor(t.reduce((a, b) => a + b, 0) / 2));
    const rate = 0.001;
    const traj: number[][] = [];
    const delta = new Array<number>(E).fill(0);
    for (let b = 0; b < batches; b++) {
      if (bias === 'loss-free') {
        const mean = slots / E;
        for (let e = 0; e < E; e++) delta[e]! += rate * Math.sign(mean - natural[e]! * (1 + 0.3 * gauss()));
      }
      traj.push(delta.map((d) => Number(d.toFixed(6))));
    }
    const under = used.map((t, e) => [t, e] as const).filter(([t]) => t < threshold).map(([, e]) => e);
    layers.push({
      layer: (o.firstLayer ?? 0) + i,
      experts: E,
      top_k: topK,
      natural: stats(natural, r),
      used: stats(used, r),
      natural_second_half: summarize(half(natural)),
      used_second_half: summarize(half(used)),
      under_calibrated: under,
      bias: traj.length ? traj[traj.length - 1]!.slice() : new Array<number>(E).fill(0),
      bias_trajectory: traj,
    });
  }
  const mean = (f: (l: LayerBalance) => BalanceSummary): BalanceSummary => averageSummaries(layers.map(f));
  return {
    format: BALANCE_REPORT_FORMAT,
    model: o.model ?? '/models/tiny-mixtral',
    model_type: 'mixtral',
    data: o.data ?? ['calib-data/c4-sample.jsonl'],
    samples,
    seq_len: seqLen,
    tokens,
    seed: o.seed ?? 1,
    routing_bias: bias,
    bias_rate: bias === 'loss-free' ? 0.001 : 0,
    bias_update: 'sign',
    batches,
    min_tokens_threshold: threshold,
    definitions: DEFINITIONS,
    layers,
    summary: {
      natural: mean((l) => l.natural),
      used: mean((l) => l.used),
      natural_second_half: mean((l) => l.natural_second_half),
      used_second_half: mean((l) => l.used_second_half),
    },
  };
}

/** 3 layers × 8 experts, hostile model/data paths, two experts with 0 tokens and one with 3. */
export function smallReport(): BalanceReport {
  return syntheticReport({
    layers: 3,
    experts: 8,
    topK: 2,
    seed: 7,
    zero: { 1: [3, 5] },
    few: { 2: [0] },
    model: NASTY_MODEL,
    data: [NASTY_DATA, 'calib-data/wiki.train.raw'],
  });
}

/** 2 layers × 64 experts, top-6, one expert with 0 tokens. */
export function wideReport(): BalanceReport {
  return syntheticReport({ layers: 2, experts: 64, topK: 6, seed: 11, zero: { 0: [17] }, firstLayer: 1, samples: 32, seqLen: 256 });
}

/** A report with nothing under-calibrated and no routing bias. */
export function balancedReport(): BalanceReport {
  return syntheticReport({ layers: 4, experts: 8, seed: 3, skew: 0.2, routingBias: 'none', minTokensThreshold: 1 });
}
