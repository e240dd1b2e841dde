/**
 * Statistics of a model against a reference over the same predictions, with the definitions llama.cpp's
 * `llama-perplexity --kl-divergence` prints (tools/perplexity/perplexity.cpp), so the numbers can be read the same way:
 * - "±" is the standard error of a mean over predictions, sqrt(var / (n − 1)), positions taken as independent
 *   (they are not quite: neighbouring positions share context, so it is a lower bound);
 * - percentiles interpolate linearly between sorted values at fraction · (n − 1); the median is the 50th;
 * - Δp = p_model(next token) − p_ref(next token); "same top p" = share of predictions whose argmax tokens agree.
 */

/** A distribution of per-prediction values: its mean (± standard error) and percentiles (pNN = NN-th percentile). */
export interface Spread {
  mean: number;
  /** Standard error of the mean; null with fewer than two predictions. */
  mean_stderr: number | null;
  max: number;
  p99_9: number;
  p99: number;
  p95: number;
  p90: number;
  median: number;
  p10: number;
  p5: number;
  p1: number;
  p0_1: number;
  min: number;
}

export interface Comparison {
  /** KL(P_ref ‖ P_model) of the next-token distributions, nats per prediction. */
  kl: Spread;
  /** Share of predictions where both models' most likely token is the same (llama.cpp's "Same top p"). */
  top1_agreement: number;
  top1_agreement_stderr: number | null;
  /** Mean |NLL_model − NLL_ref| of the next token (nats). */
  mean_abs_delta_nll: number;
  /** ln(PPL_model / PPL_ref) = mean(NLL_model − NLL_ref), with its standard error; and PPL_model / PPL_ref. */
  ln_ppl_ratio: number;
  ln_ppl_ratio_stderr: number | null;
  ppl_ratio: number;
  /** Pearson correlation of the two models' per-prediction NLLs (llama.cpp's Cor(ln(PPL(Q)), ln(PPL(base)))). */
  nll_correlation: number | null;
  /** Δp = p_model(next token) − p_ref(next token), and its root mean square. */
  delta_p: Spread & { p75: number; p25: number; rms: number };
}

/** Linear interpolation between sorted values at fraction · (n − 1) (llama.cpp's percentile). */
export function percentile(sorted: Float64Array, fraction: number): number {
  const n = sorted.length;
  if (fraction <= 0) return sorted[0]!;
  if (fraction >= 1) return sorted[n - 1]!;
  const p = fraction * (n - 1);
  const i = Math.floor(p);
  const f = p - i;
  return (1 - f) * sorted[i]! + f * sorted[Math.min(i + 1, n - 1)]!;
}

/** Mean and standard error of the mean (two-pass). */
export function meanStderr(x: ArrayLike<number>): { mean: number; stderr: number | null } {
  const n = x.length;
  let s = 0;
  for (let i = 0; i < n; i++) s += x[i]!;
  const mean = s / n;
  if (n < 2) return { mean, stderr: null };
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (x[i]! - mean) ** 2;
  return { mean, stderr: Math.sqrt(ss / n / (n - 1)) };
}

/** Mean ± standard error and percentiles of `x`; `extra` names more percentiles (e.g. { p75: 0.75 }). */
export function spread<K extends string = never>(x: Float64Array, extra: Record<K, number> = {} as Record<K, number>): Spread & Record<K, number> {
  const { mean, stderr } = meanStderr(x);
  const sorted = Float64Array.from(x).sort();
  const at = (f: number) => percentile(sorted, f);
  return {
    ...(Object.fromEntries(Object.entries<number>(extra).map(([k, f]) => [k, at(f)])) as Record<K, number>),
    mean,
    mean_stderr: stderr,
    max: sorted[sorted.length - 1]!,
    p99_9: at(0.999),
    p99: at(0.99),
    p95: at(0.95),
    p90: at(0.9),
    median: at(0.5),
    p10: at(0.1),
    p5: at(0.05),
    p1: at(0.01),
    p0_1: at(0.001),
    min: sorted[0]!,
  };
}

/** Pearson correlation; null when either side is constant. */
function pearson(a: Float64Array, b: Float64Array): number | null {
  const n = a.length;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i]!;
    mb += b[i]!;
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    const [da, db] = [a[i]! - ma, b[i]! - mb];
    sab += da * db;
    saa += da * da;
    sbb += db * db;
  }
  return saa > 0 && sbb > 0 ? sab / Math.sqrt(saa * sbb) : null;
}

/** The comparison over predictions: per prediction KL, both NLLs and whether the top-1 tokens agree (1/0). */
export function compareStatistics(kl: Float64Array, nllRef: Float64Array, nll: Float64Array, sameTop: Uint8Array): Comparison {
  const n = kl.length;
  if (n === 0) throw new Error('compareStatistics: no predictions');
  const dNll = new Float64Array(n);
  const dp = new Float64Array(n);
  let absD = 0;
  let same = 0;
  let dp2 = 0;
  for (let i = 0; i < n; i++) {
    dNll[i] = nll[i]! - nllRef[i]!;
    absD += Math.abs(dNll[i]!);
    dp[i] = Math.exp(-nll[i]!) - Math.exp(-nllRef[i]!);
    dp2 += dp[i]! ** 2;
    same += sameTop[i]!;
  }
  const lnRatio = meanStderr(dNll);
  const top = same / n;
  const { mean, mean_stderr, max, p99_9, p99, p95, p90, p75, median, p25, p10, p5, p1, p0_1, min } = spread(dp, { p75: 0.75, p25: 0.25 });
  return {
    kl: spread(kl),
    top1_agreement: top,
    top1_agreement_stderr: n < 2 ? null : Math.sqrt((top * (1 - top)) / (n - 1)),
    mean_abs_delta_nll: absD / n,
    ln_ppl_ratio: lnRatio.mean,
    ln_ppl_ratio_stderr: lnRatio.stderr,
    ppl_ratio: Math.exp(lnRatio.mean),
    nll_correlation: pearson(nll, nllRef),
    delta_p: { mean, mean_stderr, rms: Math.sqrt(dp2 / n), max, p99_9, p99, p95, p90, p75, median, p25, p10, p5, p1, p0_1, min },
  };
}
