import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { specFromConfig } from '../../src/architectures/registry.js';
import { expectedTensors } from '../../src/architectures/shapes.js';
import { forwardFlops, meanContext } from '../../src/bench/flops.js';
import { layerTimes } from '../../src/bench/layer-times.js';
import { scaleLayers, wholeModel } from '../../src/bench/extrapolate.js';
import type { RealShapeReport } from '../../src/bench/real.js';

const manifest = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../fixtures/real-shapes/qwen3-30b-a3b-1layer.json'), 'utf8')) as { config: Record<string, unknown> };

describe('forward FLOPs per token', () => {
  it('meanContext: causal average (S + 1) / 2, capped by a sliding window', () => {
    expect(meanContext(512, null)).toBe(256.5);
    expect(meanContext(4, 2)).toBe((1 + 2 + 2 + 2) / 4);
  });

  it('one Qwen3-30B-A3B layer, by hand', () => {
    const spec = specFromConfig(manifest.config);
    const shapes = new Map(expectedTensors(spec).map((t) => [t.name, t.shape]));
    const f = forwardFlops(spec, (n) => shapes.get(n)!, 512);
    // q 4096×2048, k and v 512×2048, o 2048×4096; attention 32 heads × (128 + 128) × 256.5 keys; router 128×2048;
    // 8 experts × (gate + up 768×2048, down 2048×768); lm_head 4096×2048 — all × 2 FLOPs per multiply-add.
    const attention = 2 * (4096 * 2048 + 2 * 512 * 2048 + 2048 * 4096) + 2 * 32 * 256 * 256.5;
    const moe = 2 * 128 * 2048 + 8 * 2 * 3 * 768 * 2048;
    expect(f.layers).toEqual([attention + moe]);
    expect(f.head).toBe(2 * 4096 * 2048);
    expect(f.total).toBe(attention + moe + 2 * 4096 * 2048);
  });
});

describe('layerTimes', () => {
  it('splits progress timestamps by the ticks each layer takes; null when they do not add up', () => {
    // 2 layers × 2 batches + 2 head ticks
    expect(layerTimes(1000, [2000, 3000, 3500, 6000, 6100, 6200], [2, 2], 2)).toEqual([2, 3]);
    expect(layerTimes(1000, [2000, 3000, 3500], [2, 2], 2)).toBeNull();
    expect(layerTimes(1000, [2000, 3000, 3500, 6000], [1, 3])).toEqual([1, 4]);
  });
});

describe('whole-model extrapolation', () => {
  it('dense layers from the measured dense layers, MoE layers from the mean of the others', () => {
    expect(scaleLayers([10, 12], 0, 48)).toBe(11 * 48);
    expect(scaleLayers([2, 30, 34], 1, 27)).toBe(2 + 32 * 26);
  });

  it('whole-model quantize seconds, ours and the reference pipeline, weigh a dense layer by the real model', () => {
    const r = {
      shape: 'deepseek-v2-lite',
      quantize: { layerSeconds: [60, 90], peakRssMb: 1000 },
      quantizeOnePass: { layerSeconds: [61, 95], peakRssMb: 1000 },
      reference: { seconds: 300, layerSeconds: [80, 220], peakRssMb: 9000, method: 'agq', hessianDtype: 'float32' },
    } as unknown as RealShapeReport;
    const w = wholeModel(r)!;
    expect(w.quantizeSeconds).toBe(60 + 26 * 90);
    expect(w.onePassQuantizeSeconds).toBe(61 + 26 * 95);
    expect(w.referenceQuantizeSeconds).toBe(80 + 26 * 220);
    // The two-layer sums would say 150 / 300 = 0.5×; the 27-layer model is at 0.41×.
    expect(w.quantizeSeconds! / w.referenceQuantizeSeconds!).toBeCloseTo(2400 / 5800, 12);
  });
});
