/**
 * From the real-shape measurements (a few layers, vocabulary 4,096) to the whole models — an extrapolation, and
 * labelled as one wherever it is printed: per-layer seconds × the model's layer count (dense layers from the
 * measured dense layer), plus the output head at the real vocabulary at the forward's measured GFLOP/s, for the same
 * tokens. Memory: the measured peak (streaming holds about one layer, whatever the count) plus the real lm_head in
 * float32 for the forward. Not included: reading the checkpoint from disk when it does not fit the page cache.
 */
import type { RealShapeReport } from './real.js';

/** The real models behind the shapes of make_real_shapes.py. */
export const REAL_MODELS: Record<string, { name: string; layers: number; denseLayers: number; vocab: number; hidden: number; bf16GB: number }> = {
  'qwen3-30b-a3b': { name: 'Qwen3-30B-A3B', layers: 48, denseLayers: 0, vocab: 151936, hidden: 2048, bf16GB: 61.1 },
  'olmoe-1b-7b': { name: 'OLMoE-1B-7B', layers: 16, denseLayers: 0, vocab: 50304, hidden: 2048, bf16GB: 13.8 },
  'deepseek-v2-lite': { name: 'DeepSeek-V2-Lite', layers: 27, denseLayers: 1, vocab: 102400, hidden: 2048, bf16GB: 31.4 },
  'mixtral-8x7b': { name: 'Mixtral-8x7B', layers: 32, denseLayers: 0, vocab: 32000, hidden: 4096, bf16GB: 93.4 },
};

export interface WholeModel {
  shape: string;
  model: string;
  layers: number;
  /** Seconds for the bench's forward windows, calibration and quantization, through the whole model. */
  forwardSeconds: number | null;
  forwardTokens: number | null;
  calibrateSeconds: number | null;
  quantizeSeconds: number | null;
  /**
   * The PyTorch reference pipeline and our one-capture-pass protocol through the whole model, the same way: a model
   * with one dense layer among 27 weighs it 1/27, not 1/2 as the two-layer checkpoint's sums do.
   */
  referenceQuantizeSeconds: number | null;
  onePassQuantizeSeconds: number | null;
  /** GB: measured peak RSS (+ the real lm_head in float32 for the forward). */
  forwardGB: number | null;
  calibrateGB: number | null;
  quantizeGB: number | null;
}

const ok = <T extends object>(r: T | { error: string } | undefined): r is T => !!r && !('error' in r);

/**
 * Whole-model seconds from per-layer seconds: the first `denseLayers` measured layers stand for the model's dense
 * layers, the mean of the others for its MoE layers.
 */
export function scaleLayers(layerSeconds: number[], denseLayers: number, layers: number): number {
  const dense = layerSeconds.slice(0, denseLayers);
  const moe = layerSeconds.slice(denseLayers);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  return (denseLayers ? mean(dense) * denseLayers : 0) + mean(moe) * (layers - denseLayers);
}

export function wholeModel(r: RealShapeReport): WholeModel | null {
  const m = REAL_MODELS[r.shape];
  if (!m) return null;
  const GB = (mb: number) => (mb * 2 ** 20) / 1e9;
  const f = ok(r.forward) ? r.forward : null;
  const c = ok(r.calibrate) ? r.calibrate : null;
  const q = ok(r.quantize) ? r.quantize : null;
  const q1 = ok(r.quantizeOnePass) ? r.quantizeOnePass : null;
  const ref = ok(r.reference) ? r.reference : null;
  let forwardSeconds: number | null = null;
  if (f?.layerSeconds) {
    const rate = (f.flopsPerToken.total * f.tokensPerSec) / 1e9; // GFLOP/s the forward reached
    forwardSeconds = scaleLayers(f.layerSeconds, m.denseLayers, m.layers) + (f.tokens * 2 * m.hidden * m.vocab) / 1e9 / rate;
  }
  return {
    shape: r.shape,
    model: m.name,
    layers: m.layers,
    forwardSeconds,
    forwardTokens: f?.tokens ?? null,
    calibrateSeconds: c?.layerSeconds ? scaleLayers(c.layerSeconds, m.denseLayers, m.layers) : null,
    quantizeSeconds: q?.layerSeconds ? scaleLayers(q.layerSeconds, m.denseLayers, m.layers) : null,
    referenceQuantizeSeconds: ref?.layerSeconds ? scaleLayers(ref.layerSeconds, m.denseLayers, m.layers) : null,
    onePassQuantizeSeconds: q1?.layerSeconds ? scaleLayers(q1.layerSeconds, m.denseLayers, m.layers) : null,
    forwardGB: f ? GB(f.peakRssMb) + (m.vocab * m.hidden * 4) / 1e9 : null,
    calibrateGB: c ? GB(c.peakRssMb) : null,
    quantizeGB: q ? GB(q.peakRssMb) : null,
  };
}
