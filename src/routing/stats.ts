/**
 * Per-layer, per-expert routing counters filled batch by batch during calibration: tokens and affinity mass for the
 * natural routing (no calibration bias) and the routing used, the same restricted to the second half of the batches,
 * and the per-channel sum of |x| of each expert's input rows.
 */
import type { MoeFfnSpec, ModelSpec } from '../architectures/types.js';
import { moeLayers } from '../architectures/types.js';
import type { Routing } from './router.js';

export class LayerCounters {
  readonly naturalTokens: Float64Array;
  readonly usedTokens: Float64Array;
  readonly naturalMass: Float64Array;
  readonly usedMass: Float64Array;
  readonly naturalTokensSecondHalf: Float64Array;
  readonly usedTokensSecondHalf: Float64Array;
  /** Σ |x| per (expert, channel) of the rows each expert received under the routing used: [E × hidden]. */
  readonly inputAbsSum: Float64Array;

  constructor(
    readonly layer: number,
    readonly numExperts: number,
    readonly topK: number,
    readonly hidden: number,
  ) {
    const E = numExperts;
    this.naturalTokens = new Float64Array(E);
    this.usedTokens = new Float64Array(E);
    this.naturalMass = new Float64Array(E);
    this.usedMass = new Float64Array(E);
    this.naturalTokensSecondHalf = new Float64Array(E);
    this.usedTokensSecondHalf = new Float64Array(E);
    this.inputAbsSum = new Float64Array(E * hidden);
  }
}

function accumulate(r: Routing, tokens: Float64Array, mass: Float64Array, secondHalf: Float64Array | null): void {
  for (let i = 0; i < r.experts.length; i++) {
    const e = r.experts[i]!;
    tokens[e]!++;
    mass[e]! += r.weights[i]!;
    if (secondHalf) secondHalf[e]!++;
  }
}

export class RoutingStatsCollector {
  readonly layers = new Map<number, LayerCounters>();

  constructor(
    spec: ModelSpec,
    /** Batches per layer; batches with index ≥ ⌊numBatches/2⌋ form the second half. */
    readonly numBatches: number,
  ) {
    for (const l of moeLayers(spec)) {
      const f: MoeFfnSpec = l.ffn;
      this.layers.set(l.index, new LayerCounters(l.index, f.routing.numExperts, f.routing.numExpertsUsed, spec.hiddenSize));
    }
  }

  /** Record one batch of one layer: `used` routed the batch, `natural` is what the model alone would have chosen. */
  record(layer: number, batchIndex: number, ffnIn: Float32Array, used: Routing, natural: Routing): void {
    const c = this.layers.get(layer)!;
    const second = batchIndex >= Math.floor(this.numBatches / 2);
    accumulate(natural, c.naturalTokens, c.naturalMass, second ? c.naturalTokensSecondHalf : null);
    accumulate(used, c.usedTokens, c.usedMass, second ? c.usedTokensSecondHalf : null);
    const H = c.hidden;
    const k = used.k;
    for (let t = 0; t < used.numTokens; t++) {
      const row = t * H;
      for (let j = 0; j < k; j++) {
        const base = used.experts[t * k + j]! * H;
        for (let h = 0; h < H; h++) c.inputAbsSum[base + h]! += Math.abs(ffnIn[row + h]!);
      }
    }
  }
}
