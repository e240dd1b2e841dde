/**
 * Plain and affinity-weighted Hessians against a straightforward float64 reference built token by token from the
 * routing (token-major order, independent of the engine's expert dispatch) — this also checks row alignment
 * between each token's input and its affinity c (MoEQuant's released code misaligns it for DeepSeek).
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { MoeFfnSpec } from '../../src/architectures/types.js';
import { LayerHessians } from '../../src/calibration/hessian-collector.js';
import { createEngine } from '../../src/engine/engine.js';
import type { ActivationsEvent, MoeRoutingEvent } from '../../src/engine/forward.js';
import { readReference } from '../engine/helpers.js';
import { FIXTURES } from '../paths.js';


function relErr(a: Float32Array, b: Float64Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

describe('Hessians', () => {
  it('tiny-deepseek-v3: routed experts (plain, affinity-weighted, gate/up and down), shared expert, attention inputs', async () => {
    const dir = path.join(FIXTURES, 'tiny-deepseek-v3');
    const { ids } = readReference(dir);
    const engine = await createEngine(dir, { device: 'cpu' });
    try {
      const spec = engine.model.spec;
      const layer = spec.layers[1]!;
      const f = layer.ffn as MoeFfnSpec;
      const hess = new LayerHessians(engine.pool, spec, layer);
      let routingEv: MoeRoutingEvent | undefined;
      let acts: ActivationsEvent | undefined;
      const seqs = [ids.subarray(0, 32), ids.subarray(32, 64)];
      await engine.forward.run(seqs, {
        head: 'none',
        batchTokens: 64,
        hooks: {
          capture: true,
          onRouting: (ev) => {
            if (ev.layerIndex === 1) routingEv = ev;
          },
          onActivations: (ev) => {
            if (ev.layerIndex === 1) acts = ev;
          },
        },
      });
      await hess.add(acts!);
      // AGQ's weighted-only accumulators: the same Σ c x xᵀ bit for bit, and no plain sums to read by mistake.
      const agq = new LayerHessians(engine.pool, spec, layer, undefined, true);
      await agq.add(acts!);
      const H = spec.hiddenSize;
      const I = f.expertIntermediateSize;
      const x = routingEv!.ffnIn;
      const r = routingEv!.routing;
      let checkedExperts = 0;
      for (let e = 0; e < f.routing.numExperts; e++) {
        const gate = engine.weights.get(f.expert(e).gate);
        const up = engine.weights.get(f.expert(e).up);
        const plain = new Float64Array(H * H);
        const weighted = new Float64Array(H * H);
        const downPlain = new Float64Array(I * I);
        const downWeighted = new Float64Array(I * I);
        let tokens = 0;
        for (let t = 0; t < r.numTokens; t++) {
          for (let j = 0; j < r.k; j++) {
            if (r.experts[t * r.k + j] !== e) continue;
            const c = r.weights[t * r.k + j]!;
            const row = x.subarray(t * H, (t + 1) * H);
            tokens++;
            for (let a = 0; a < H; a++)
              for (let b = 0; b < H; b++) {
                plain[a * H + b]! += row[a]! * row[b]!;
                weighted[a * H + b]! += c * row[a]! * row[b]!;
              }
            const act = new Float64Array(I);
            for (let i = 0; i < I; i++) {
              let g = 0;
              let u = 0;
              for (let h = 0; h < H; h++) {
                g += gate[i * H + h]! * row[h]!;
                u += up[i * H + h]! * row[h]!;
              }
              act[i] = (g / (1 + Math.exp(-g))) * u;
            }
            for (let a = 0; a < I; a++)
              for (let b = 0; b < I; b++) {
                downPlain[a * I + b]! += act[a]! * act[b]!;
                downWeighted[a * I + b]! += c * act[a]! * act[b]!;
              }
          }
        }
        const gu = hess.slots.get(`layers.1.experts.${e}.gate_up_input`)!.acc;
        const dn = hess.slots.get(`layers.1.experts.${e}.down_input`)!.acc;
        expect(gu.tokens).toBe(tokens);
        if (tokens === 0) continue;
        checkedExperts++;
        expect(relErr(gu.xtx, plain)).toBeLessThan(1e-5);
        expect(relErr(gu.xtcx!, weighted)).toBeLessThan(1e-5);
        expect(relErr(dn.xtx, downPlain)).toBeLessThan(1e-4);
        expect(relErr(dn.xtcx!, downWeighted)).toBeLessThan(1e-4);
        const guW = agq.slots.get(`layers.1.experts.${e}.gate_up_input`)!.acc;
        expect(Buffer.from(guW.xtcx!.buffer).equals(Buffer.from(gu.xtcx!.buffer))).toBe(true);
        expect(() => guW.xtx).toThrow(/not kept/);
      }
      expect(Buffer.from(agq.slots.get('layers.1.ffn_input')!.acc.xtx.buffer).equals(Buffer.from(hess.slots.get('layers.1.ffn_input')!.acc.xtx.buffer))).toBe(true);
      expect(checkedExperts).toBeGreaterThan(4);
      // Weighted really differs from plain (affinities are not all 1): misaligned c would not pass the checks above.
      const any = hess.slots.get('layers.1.experts.0.gate_up_input')!.acc;
      expect(any.weightSum).not.toBeCloseTo(any.tokens, 3);
      // Whole-batch inputs: ffn_input = Σ over all tokens.
      const ffn = hess.slots.get('layers.1.ffn_input')!.acc;
      const full = new Float64Array(H * H);
      for (let t = 0; t < r.numTokens; t++) for (let a = 0; a < H; a++) for (let b = 0; b < H; b++) full[a * H + b]! += x[t * H + a]! * x[t * H + b]!;
      expect(ffn.tokens).toBe(64);
      expect(relErr(ffn.xtx, full)).toBeLessThan(1e-5);
      for (const key of ['attn_input', 'o_proj_input', 'kv_b_proj_input', 'shared_expert.down_input'])
        expect(hess.slots.get(`layers.1.${key}`)!.acc.tokens, key).toBe(64);
    } finally {
      await engine.close();
    }
  });
});
