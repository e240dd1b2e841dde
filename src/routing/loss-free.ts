/**
 * Auxiliary-loss-free balancing (Wang et al. 2024, Algorithm 1) applied during calibration: each MoE layer keeps a
 * bias δ added to the routing scores for top-k *selection* only. After each batch, from that batch:
 *   quantile: δ_i += u · x_i, where x_i is the shift of expert i's selection score that would have given it exactly
 *             its mean share (T·k/E) of this batch's tokens, every other expert's bias held (balancingShift)
 *   sign:     δ_i += u · sign(mean_load − load_i)
 *   linear:   δ_i += u · (mean_load − load_i) / mean_load
 * Batches are processed in order, so a batch is routed with the bias learned from earlier batches only.
 *
 * Why quantile is the default: sign and linear steps are in the units of the scores, and the scores' scale changes
 * with the expert count and the router's sharpness — softmax scores are ~1/E apart at the selection boundary, so a
 * rate that balances 8–16 experts oscillates at 128 (MaxVio made worse), and one small enough for 128 flat experts
 * is too slow for a peaked router. x_i is measured on the batch's own scores, so its scale is always the right one,
 * and u is a plain fraction of the correction (README "Choosing the bias rate").
 */
import type { RoutingSpec } from '../architectures/types.js';
import { fail } from '../errors.js';

export type BiasUpdate = 'quantile' | 'sign' | 'linear';
export const BIAS_UPDATES: readonly BiasUpdate[] = ['quantile', 'sign', 'linear'];

/** What the quantile rule needs of a batch besides its loads. */
export interface BiasBatch {
  spec: RoutingSpec;
  /** Unbiased scores [T × E] (Routing.scores). */
  scores: Float32Array;
  /** The model's own selection bias (DeepSeek-V3 e_score_correction_bias), if any. */
  correctionBias: Float32Array | null;
}

/** k-th and (k+1)-th largest of `values` (k ≥ 1; −∞ where there are fewer). */
function kthAndNext(values: Float64Array, n: number, k: number, top: Float64Array): [number, number] {
  // A sorted top-(k+1) in one pass: k is small (≤ 16) next to n.
  let m = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (m === k + 1 && !(v > top[k]!)) continue;
    let j = m === k + 1 ? k : m++;
    while (j > 0 && v > top[j - 1]!) {
      top[j] = top[j - 1]!;
      j--;
    }
    top[j] = v;
  }
  return [m >= k ? top[k - 1]! : -Infinity, m >= k + 1 ? top[k]! : -Infinity];
}

/**
 * For each expert i, the shift x_i of its selection score (scores + correction bias + `bias`) that would have given
 * it exactly round(T·k/E) of the batch's T tokens, the others held: per token, the margin of i over the value it
 * must beat — the k-th largest choice among the other experts it competes with (the (k+1)-th when i is itself in
 * the top k), and with group-limited routing also what its group needs to stay among the kept groups — then x_i
 * moves the target-th largest margin to zero. Ties and DeepSeek-V2's 0.0 group mask are not modelled (the shift is
 * a step size, not a routing decision).
 */
export function balancingShift(b: BiasBatch, bias: Float32Array): Float64Array {
  const { spec, scores, correctionBias } = b;
  const E = spec.numExperts;
  const k = spec.numExpertsUsed;
  const T = scores.length / E;
  const G = spec.groups?.numGroups ?? 1;
  const groupSize = E / G;
  const keep = Math.min(spec.groups?.numGroupsUsed ?? 1, G);
  const margins = Array.from({ length: E }, () => new Float64Array(T));
  const choice = new Float64Array(E);
  const top = new Float64Array(k + 1);
  const union = new Float64Array(E);
  const groupScore = new Float64Array(G);
  const order = Array.from({ length: G }, (_, g) => g);
  for (let t = 0; t < T; t++) {
    for (let e = 0; e < E; e++) {
      let c = scores[t * E + e]!;
      if (correctionBias) c = Math.fround(c + correctionBias[e]!);
      choice[e] = Math.fround(c + bias[e]!);
    }
    if (G === 1) {
      const [kth, next] = kthAndNext(choice, E, k, top);
      for (let e = 0; e < E; e++) margins[e]![t] = choice[e]! - (choice[e]! >= kth ? next : kth);
      continue;
    }
    for (let g = 0; g < G; g++) {
      const [f, s] = bestTwoWithout(choice, g * groupSize, groupSize, -1);
      groupScore[g] = spec.groups!.groupScore === 'max' ? f : groupSize > 1 ? f + s : f;
    }
    order.sort((x, y) => groupScore[y]! - groupScore[x]! || x - y);
    for (let g = 0; g < G; g++) {
      // Groups kept besides g when g is kept, and the score g must beat to be kept: the keep-th best of the others.
      const others = order.filter((h) => h !== g);
      const bar = keep <= G - 1 ? groupScore[others[keep - 1]!]! : -Infinity;
      let n = 0;
      for (const h of [g, ...others.slice(0, keep - 1)]) for (let e = h * groupSize; e < (h + 1) * groupSize; e++) union[n++] = choice[e]!;
      const [kth, next] = kthAndNext(union, n, k, top);
      for (let e = g * groupSize; e < (g + 1) * groupSize; e++) {
        const c = choice[e]!;
        // g's score without e: max → its best other s1 (kept whatever e scores when s1 beats the bar); top-2 sum →
        // e + s1 once e ≥ s2, so e needs bar − s1 unless s1 + s2 already beats the bar.
        const [s1, s2] = bestTwoWithout(choice, g * groupSize, groupSize, e);
        const max = spec.groups!.groupScore === 'max' || groupSize === 1;
        const groupNeeds = (max ? s1 : s1 + s2) > bar ? -Infinity : max ? bar : bar - s1;
        margins[e]![t] = c - Math.max(c >= kth ? next : kth, groupNeeds);
      }
    }
  }
  const target = Math.min(T - 1, Math.max(1, Math.round((T * k) / E)));
  return Float64Array.from(margins, (m) => {
    m.sort();
    // Descending position target (1-based) is ascending index T − target; move midway between it and the next.
    return -0.5 * (m[T - target]! + m[T - target - 1]!);
  });
}

/** The two largest choices of experts [start, start + size) other than `skip` (−∞ where there are fewer). */
function bestTwoWithout(choice: Float64Array, start: number, size: number, skip: number): [number, number] {
  let f = -Infinity;
  let s = -Infinity;
  for (let e = start; e < start + size; e++) {
    if (e === skip) continue;
    const v = choice[e]!;
    if (v > f) (s = f), (f = v);
    else if (v > s) s = v;
  }
  return [f, s];
}

export class LossFreeBias {
  private readonly bias = new Map<number, Float32Array>();
  /** δ after each batch, per layer. */
  readonly trajectory = new Map<number, Float32Array[]>();

  constructor(
    readonly rate: number,
    readonly update: BiasUpdate,
  ) {
    if (!(rate > 0) || !Number.isFinite(rate)) throw fail('BAD_OPTION', `--bias-rate must be a positive number (got ${rate})`);
    if (!BIAS_UPDATES.includes(update)) throw fail('BAD_OPTION', `--bias-update must be ${BIAS_UPDATES.join(', ')} (got ${update})`);
  }

  /** Current δ of a layer (zeros before the first update). */
  get(layer: number, numExperts: number): Float32Array {
    let b = this.bias.get(layer);
    if (!b) {
      b = new Float32Array(numExperts);
      this.bias.set(layer, b);
      this.trajectory.set(layer, []);
    }
    return b;
  }

  /** Update a layer's δ from one batch's per-expert loads (and, for the quantile rule, its scores). */
  step(layer: number, loads: ArrayLike<number>, batch?: BiasBatch): void {
    const b = this.get(layer, loads.length);
    if (this.update === 'quantile') {
      if (!batch) throw new Error('LossFreeBias: the quantile rule needs the batch scores');
      const x = balancingShift(batch, b);
      for (let i = 0; i < b.length; i++) b[i] = Math.fround(b[i]! + this.rate * x[i]!);
    } else {
      let total = 0;
      for (let i = 0; i < loads.length; i++) total += loads[i]!;
      const mean = total / loads.length;
      if (mean > 0) {
        for (let i = 0; i < loads.length; i++) {
          const gap = mean - loads[i]!;
          b[i] = Math.fround(b[i]! + (this.update === 'sign' ? this.rate * Math.sign(gap) : (this.rate * gap) / mean));
        }
      }
    }
    this.trajectory.get(layer)!.push(Float32Array.from(b));
  }
}
