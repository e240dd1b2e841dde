/**
 * Auxiliary-loss-free balancing (Wang et al. 2024, Algorithm 1) applied during calibration: each MoE layer keeps a
 * bias δ added to the routing scores for top-k *selection* only. After each batch, from that batch's loads:
 *   sign:   δ_i += u · sign(mean_load − load_i)
 *   linear: δ_i += u · (mean_load − load_i) / mean_load
 * Batches are processed in order, so a batch is routed with the bias learned from earlier batches only.
 */
import { fail } from '../errors.js';

export type BiasUpdate = 'sign' | 'linear';

export class LossFreeBias {
  private readonly bias = new Map<number, Float32Array>();
  /** δ after each batch, per layer. */
  readonly trajectory = new Map<number, Float32Array[]>();

  constructor(
    readonly rate: number,
    readonly update: BiasUpdate,
  ) {
    if (!(rate > 0) || !Number.isFinite(rate)) throw fail('BAD_OPTION', `--bias-rate must be a positive number (got ${rate})`);
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

  /** Update a layer's δ from one batch's per-expert loads. */
  step(layer: number, loads: ArrayLike<number>): void {
    const b = this.get(layer, loads.length);
    let total = 0;
    for (let i = 0; i < loads.length; i++) total += loads[i]!;
    const mean = total / loads.length;
    if (mean > 0) {
      for (let i = 0; i < loads.length; i++) {
        const gap = mean - loads[i]!;
        b[i] = Math.fround(b[i]! + (this.update === 'sign' ? this.rate * Math.sign(gap) : (this.rate * gap) / mean));
      }
    }
    this.trajectory.get(layer)!.push(Float32Array.from(b));
  }
}
