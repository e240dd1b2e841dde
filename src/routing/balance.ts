/** Balance metrics of expert loads (definitions in src/report/types.ts). */
import type { BalanceStats, BalanceSummary } from '../report/types.js';

export function maxVio(loads: ArrayLike<number>): number {
  let sum = 0;
  let max = 0;
  for (let i = 0; i < loads.length; i++) {
    sum += loads[i]!;
    max = Math.max(max, loads[i]!);
  }
  if (sum === 0) return 0;
  const mean = sum / loads.length;
  return (max - mean) / mean;
}

/** Sample std (denominator E − 1) of usage frequencies share_e = load_e / Σ load. */
export function sigma(loads: ArrayLike<number>): number {
  const E = loads.length;
  let sum = 0;
  for (let i = 0; i < E; i++) sum += loads[i]!;
  if (sum === 0 || E < 2) return 0;
  const mean = 1 / E;
  let ss = 0;
  for (let i = 0; i < E; i++) ss += (loads[i]! / sum - mean) ** 2;
  return Math.sqrt(ss / (E - 1));
}

/** Entropy of the usage distribution divided by ln(E): 1 when perfectly balanced. */
export function normalizedEntropy(loads: ArrayLike<number>): number {
  const E = loads.length;
  let sum = 0;
  for (let i = 0; i < E; i++) sum += loads[i]!;
  if (sum === 0 || E < 2) return 0;
  let h = 0;
  for (let i = 0; i < E; i++) {
    const p = loads[i]! / sum;
    if (p > 0) h -= p * Math.log(p);
  }
  return h / Math.log(E);
}

export function summarize(loads: ArrayLike<number>): BalanceSummary {
  return { maxvio: maxVio(loads), sigma: sigma(loads), min_tokens: Math.min(...Array.from(loads)) };
}

export function balanceStats(loads: ArrayLike<number>, affinityMass: ArrayLike<number>): BalanceStats {
  const tokens = Array.from(loads);
  const total = tokens.reduce((a, b) => a + b, 0);
  const mass = Array.from(affinityMass);
  return {
    ...summarize(tokens),
    tokens,
    share: tokens.map((t) => (total ? t / total : 0)),
    affinity_mass: mass,
    mean_affinity: mass.map((m, e) => (tokens[e] ? m / tokens[e]! : 0)),
    entropy: normalizedEntropy(tokens),
  };
}

/** Mean of summaries over layers (min over layers for min_tokens). */
export function averageSummaries(list: BalanceSummary[]): BalanceSummary {
  const n = Math.max(1, list.length);
  return {
    maxvio: list.reduce((s, x) => s + x.maxvio, 0) / n,
    sigma: list.reduce((s, x) => s + x.sigma, 0) / n,
    min_tokens: list.length ? Math.min(...list.map((x) => x.min_tokens)) : 0,
  };
}
