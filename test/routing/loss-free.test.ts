/**
 * The loss-free bias update rules. balancingShift is checked against brute force (routing the batch with one
 * expert's bias swept, through route() itself) on plain, group-max (DeepSeek-V2) and group-top-2 (DeepSeek-V3) routing;
 * the default rule is checked to balance a flat 128-expert router, where the former default (linear, 0.03) did not.
 */
import { describe, expect, it } from 'vitest';
import type { RoutingSpec } from '../../src/architectures/types.js';
import { DEFAULT_BIAS_RATE, DEFAULT_BIAS_UPDATE } from '../../src/calibration/calibrate.js';
import { maxVio } from '../../src/routing/balance.js';
import { balancingShift, LossFreeBias } from '../../src/routing/loss-free.js';
import { expertLoads, route } from '../../src/routing/router.js';
import { seededRandom } from '../../src/calibration/samples.js';

const plain = (E: number, k: number): RoutingSpec => ({
  numExperts: E,
  numExpertsUsed: k,
  scoring: 'softmax',
  groups: null,
  normalize: true,
  normalizeEps: 0,
  scale: 1,
  hasCorrectionBias: false,
});

/**
 * Softmax (or sigmoid) scores [T × E] of logits sharpness · (uniform noise + a per-expert popularity of spread
 * `skew`); the popularity depends on `popSeed` only, so batches of one run share it.
 */
function scores(T: number, E: number, seed: number, sharpness: number, skew: number, sigmoid = false, popSeed = 1): Float32Array {
  const rp = seededRandom(popSeed);
  const pop = Float64Array.from({ length: E }, () => skew * (rp() - 0.5));
  const rand = seededRandom(seed);
  const out = new Float32Array(T * E);
  const row = new Float64Array(E);
  for (let t = 0; t < T; t++) {
    let max = -Infinity;
    for (let e = 0; e < E; e++) max = Math.max(max, (row[e] = sharpness * (rand() - 0.5 + pop[e]!)));
    let sum = 0;
    for (let e = 0; e < E; e++) sum += row[e] = sigmoid ? 1 / (1 + Math.exp(-row[e]!)) : Math.exp(row[e]! - max);
    for (let e = 0; e < E; e++) out[t * E + e] = Math.fround(sigmoid ? row[e]! : row[e]! / sum);
  }
  return out;
}

/** Tokens expert e gets when its bias is bias[e] + x (others unchanged), by routing the whole batch. */
function loadWith(spec: RoutingSpec, s: Float32Array, corr: Float32Array | null, bias: Float32Array, e: number, x: number): number {
  const b = Float32Array.from(bias);
  b[e] = Math.fround(b[e]! + x);
  return expertLoads(route(spec, s, { scores: s, correctionBias: corr, selectionBias: b }))[e]!;
}

describe('balancingShift', () => {
  const cases: Array<[string, RoutingSpec, boolean]> = [
    ['plain top-3 of 12', plain(12, 3), false],
    ['DeepSeek-V2 group max (4 groups, keep 2), top-3 of 16', { ...plain(16, 3), groups: { numGroups: 4, numGroupsUsed: 2, groupScore: 'max', maskedScore: 0 } }, false],
    [
      'DeepSeek-V3 group top-2 sum (4 groups, keep 2), top-4 of 16, sigmoid + correction bias',
      { ...plain(16, 4), scoring: 'sigmoid', groups: { numGroups: 4, numGroupsUsed: 2, groupScore: 'top2_sum', maskedScore: -Infinity }, hasCorrectionBias: true },
      true,
    ],
  ];
  for (const [name, spec, sigmoid] of cases) {
    it(`${name}: gives each expert its mean share when applied alone (brute force through route)`, () => {
      const T = 96;
      const E = spec.numExperts;
      const s = scores(T, E, 7, 4, 2, sigmoid);
      const rand = seededRandom(3);
      const corr = spec.hasCorrectionBias ? Float32Array.from({ length: E }, () => 0.2 * (rand() - 0.5)) : null;
      const bias = Float32Array.from({ length: E }, () => 0.02 * (rand() - 0.5));
      const x = balancingShift({ spec, scores: s, correctionBias: corr }, bias);
      const target = Math.round((T * spec.numExpertsUsed) / E);
      let hit = 0;
      for (let e = 0; e < E; e++) {
        // The shift sits between the last value giving target − … tokens and the first giving target + 1: with it,
        // expert e gets exactly `target` (up to ties, which random scores do not have).
        const got = loadWith(spec, s, corr, bias, e, x[e]!);
        if (got === target) hit++;
        expect(Math.abs(got - target), `expert ${e}: ${got} tokens with shift ${x[e]}`).toBeLessThanOrEqual(1);
      }
      expect(hit).toBeGreaterThanOrEqual(E - 1);
    });
  }
});

describe('default loss-free rule at 128 experts', () => {
  /** MaxVio of the routing used over the second half of 16 batches, and of the natural routing. */
  function run(update: 'quantile' | 'linear', rate: number, sharpness: number): { used: number; natural: number } {
    const spec = plain(128, 8);
    const bias = new LossFreeBias(rate, update);
    const used = new Float64Array(128);
    const natural = new Float64Array(128);
    for (let b = 0; b < 16; b++) {
      const s = scores(1024, 128, 100 + b, sharpness, 0.5);
      const r = route(spec, s, { scores: s, selectionBias: bias.get(0, 128) });
      const loads = expertLoads(r);
      if (b >= 8) {
        loads.forEach((n, e) => (used[e] += n));
        expertLoads(route(spec, s, { scores: s })).forEach((n, e) => (natural[e] += n));
      }
      bias.step(0, loads, { spec, scores: s, correctionBias: null });
    }
    return { used: maxVio(used), natural: maxVio(natural) };
  }

  it('is quantile, 0.8', () => {
    expect([DEFAULT_BIAS_UPDATE, DEFAULT_BIAS_RATE]).toEqual(['quantile', 0.8]);
  });

  // Logit spread ~0.9 (a random 2048-wide router, like the real-shape checkpoints) and ~2.3 (peaked).
  for (const [router, sharpness] of [
    ['flat', 3],
    ['peaked', 8],
  ] as const) {
    it(`${router} router: MaxVio over the second half ≤ ⅓ of natural (the former default, linear 0.03, is not)`, () => {
      const q = run(DEFAULT_BIAS_UPDATE, DEFAULT_BIAS_RATE, sharpness);
      expect(q.natural).toBeGreaterThan(0.5);
      expect(q.used).toBeLessThanOrEqual(q.natural / 3);
      const old = run('linear', 0.03, sharpness);
      expect(old.used).toBeGreaterThan(old.natural / 3);
    });
  }
});
