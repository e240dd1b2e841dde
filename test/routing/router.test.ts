/** Hand-checked routing cases: every expected number below was worked out by hand from the family's HF code. */
import { describe, expect, it } from 'vitest';
import type { RoutingSpec } from '../../src/architectures/types.js';
import { dispatch, expertLoads, route, type Routing } from '../../src/routing/router.js';

const softmax = (xs: number[]) => {
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
};

const base: RoutingSpec = {
  numExperts: 4,
  numExpertsUsed: 2,
  scoring: 'softmax',
  groups: null,
  normalize: true,
  normalizeEps: 0,
  scale: 1,
  hasCorrectionBias: false,
};

describe('route', () => {
  it('Mixtral: softmax over all experts, top-2, renormalised', () => {
    const r = route(base, Float32Array.from([0, 1, 2, 3]));
    expect(Array.from(r.experts)).toEqual([3, 2]);
    const p = softmax([0, 1, 2, 3]);
    expect(r.weights[0]).toBeCloseTo(p[3]! / (p[2]! + p[3]!), 6);
    expect(r.weights[1]).toBeCloseTo(p[2]! / (p[2]! + p[3]!), 6);
    expect(r.scores[0]).toBeCloseTo(p[0]!, 6);
  });

  it('Qwen2/OLMoE (norm_topk_prob false): raw softmax probabilities as weights', () => {
    const r = route({ ...base, normalize: false }, Float32Array.from([0, 1, 2, 3]));
    const p = softmax([0, 1, 2, 3]);
    expect(r.weights[0]).toBeCloseTo(p[3]!, 6);
    expect(r.weights[1]).toBeCloseTo(p[2]!, 6);
  });

  it('precomputed scores (the engine graph\'s softmax) are used as given for selection and weights', () => {
    const logits = Float32Array.from([0, 1, 2, 3]);
    const scores = Float32Array.from([0.4, 0.3, 0.2, 0.1]); // deliberately not softmax(logits)
    const r = route(base, logits, { scores });
    expect(Array.from(r.experts)).toEqual([0, 1]);
    expect(r.weights[0]).toBeCloseTo(0.4 / 0.7, 6);
    expect(r.scores).toBe(scores);
    expect(() => route(base, logits, { scores: new Float32Array(3) })).toThrow(/3 scores for 4 logits/);
  });

  it('ties: the lower expert index wins', () => {
    const r = route(base, Float32Array.from([1, 1, 1, 0, 5, 5, 5, 5]));
    expect(Array.from(r.experts)).toEqual([0, 1, 0, 1]);
    expect(r.weights[0]).toBeCloseTo(0.5, 6);
  });

  it('selection equals a full sort by (score desc, index asc) — many ties, -inf, every k', () => {
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (const [E, k] of [[8, 1], [8, 2], [16, 4], [16, 16], [64, 6]] as const) {
      const T = 200;
      // Few distinct logits make ties common; some −inf rows test what never displaces a number.
      const logits = Float32Array.from({ length: T * E }, () => (rand() < 0.05 ? -Infinity : Math.floor(rand() * 5)));
      for (let e = 0; e < E; e++) logits[e] = -Infinity;
      const bias = Float32Array.from({ length: E }, () => Math.floor(rand() * 3) / 8);
      const r = route({ ...base, numExperts: E, numExpertsUsed: k }, logits, { selectionBias: bias });
      for (let t = 0; t < T; t++) {
        const choice = Array.from({ length: E }, (_, e) => Math.fround(r.scores[t * E + e]! + bias[e]!));
        const want = choice.map((v, e) => [v, e] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k).map(([, e]) => e);
        expect(Array.from(r.experts.subarray(t * k, t * k + k))).toEqual(want);
      }
    }
  });

  it('picking straight from given scores (no biases) matches the general path bit for bit', () => {
    let seed = 11;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (const [E, k, normalize, scale] of [[8, 2, true, 1], [16, 4, false, 1], [64, 6, true, 2.5]] as const) {
      const T = 300;
      const logits = Float32Array.from({ length: T * E }, () => (rand() < 0.03 ? -Infinity : Math.floor(rand() * 6) / 2));
      const spec = { ...base, numExperts: E, numExpertsUsed: k, normalize, scale };
      const general = route(spec, logits, { selectionBias: new Float32Array(E) }); // zero bias: general path
      const direct = route(spec, logits, { scores: general.scores.slice() });
      expect(Array.from(direct.experts)).toEqual(Array.from(general.experts));
      expect(Array.from(direct.weights)).toEqual(Array.from(general.weights));
    }
  });

  it('selection bias moves selection but never the combine weights', () => {
    const logits = Float32Array.from([0, 1, 2, 3]);
    const r = route({ ...base, normalize: false }, logits, { selectionBias: Float32Array.from([10, 0, 0, 0]) });
    const p = softmax([0, 1, 2, 3]);
    expect(Array.from(r.experts)).toEqual([0, 3]);
    expect(r.weights[0]).toBeCloseTo(p[0]!, 6);
    expect(r.weights[1]).toBeCloseTo(p[3]!, 6);
  });

  const v3: RoutingSpec = {
    numExperts: 8,
    numExpertsUsed: 2,
    scoring: 'sigmoid',
    groups: { numGroups: 4, numGroupsUsed: 2, groupScore: 'top2_sum', maskedScore: -Infinity },
    normalize: true,
    normalizeEps: 1e-20,
    scale: 2.5,
    hasCorrectionBias: true,
  };

  // logits 0 → s = 0.5; choice = s + bias = [-.1,-.2,-.4,-.4, .6,-.3,-.05,-.06]
  // group scores (top-2 sums): g0 -0.3, g1 -0.8, g2 0.3, g3 -0.11 → keep g2, g3
  const negBias = Float32Array.from([-0.6, -0.7, -0.9, -0.9, 0.1, -0.8, -0.55, -0.56]);

  it('DeepSeek-V3 (transformers 5.18): masked groups get −inf, so only kept groups are selectable even when negative', () => {
    // top-2 of [−inf ×4, .6, −.3, −.05, −.06] = experts 4 and 6
    const r = route(v3, new Float32Array(8), { correctionBias: negBias });
    expect(Array.from(r.experts)).toEqual([4, 6]);
    // weights from the unbiased sigmoid (0.5 each), renormalised, × 2.5
    expect(Array.from(r.weights)).toEqual([1.25, 1.25]);
  });

  it('0.0-masked groups (DeepSeek-V2, older V3 code): with negative biased scores a masked expert can win', () => {
    // top-2 of [0,0,0,0,.6,-.3,-.05,-.06] = expert 4, then expert 0 (tie at 0.0, lowest index)
    const spec = { ...v3, groups: { ...v3.groups!, maskedScore: 0 } };
    const r = route(spec, new Float32Array(8), { correctionBias: negBias });
    expect(Array.from(r.experts)).toEqual([4, 0]);
  });

  it("DeepSeek-V3: calibration bias adds to the correction bias for selection only", () => {
    // s = [.881, .731, .5 ×6]; with +1 on expert 6: groups g3 (2.0) and g0 (1.61) kept; top-2 = 6 (1.5), 0 (.881)
    const logits = Float32Array.from([2, 1, 0, 0, 0, 0, 0, 0]);
    const plain = route(v3, logits, { correctionBias: new Float32Array(8) });
    expect(Array.from(plain.experts)).toEqual([0, 1]);
    const steered = route(v3, logits, { correctionBias: new Float32Array(8), selectionBias: Float32Array.from([0, 0, 0, 0, 0, 0, 1, 0]) });
    expect(Array.from(steered.experts)).toEqual([6, 0]);
    const s0 = 1 / (1 + Math.exp(-2));
    expect(steered.weights[1]).toBeCloseTo((2.5 * s0) / (s0 + 0.5), 5);
  });

  it('DeepSeek-V2 group_limited_greedy: group score = max, × routed_scaling_factor without renormalisation', () => {
    const spec: RoutingSpec = { ...base, numExperts: 4, groups: { numGroups: 2, numGroupsUsed: 1, groupScore: 'max', maskedScore: 0 }, normalize: false, scale: 16 };
    // softmax of [3, -5, 2, 2.5]: group 0 max = p0 wins over group 1 → only experts 0, 1 selectable
    const r = route(spec, Float32Array.from([3, -5, 2, 2.5]));
    expect(Array.from(r.experts)).toEqual([0, 1]);
    const p = softmax([3, -5, 2, 2.5]);
    expect(r.weights[0]).toBeCloseTo(16 * p[0]!, 5);
    expect(r.weights[1]).toBeCloseTo(16 * p[1]!, 5);
  });
});

describe('dispatch', () => {
  it('groups tokens by expert and records where each (token, slot) output lands', () => {
    const r: Routing = {
      numTokens: 3,
      numExperts: 3,
      k: 2,
      experts: Int32Array.from([1, 0, 1, 2, 0, 1]),
      weights: Float32Array.from([0.6, 0.4, 0.7, 0.3, 0.9, 0.1]),
      scores: new Float32Array(9),
    };
    expect(Array.from(expertLoads(r))).toEqual([2, 3, 1]);
    const d = dispatch(r);
    expect(d.rows.map((x) => Array.from(x))).toEqual([[0, 2], [0, 1, 2], [1]]);
    expect(d.rowWeights.map((x) => Array.from(x).map((v) => +v.toFixed(2)))).toEqual([[0.4, 0.9], [0.6, 0.7, 0.1], [0.3]]);
    // expert-concatenated order: e0 rows (0,1), e1 rows (2,3,4), e2 row (5)
    expect(Array.from(d.combinePos)).toEqual([2, 0, 3, 5, 1, 4]);
  });
});
