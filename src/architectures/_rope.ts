/**
 * Rotary embedding frequencies, following transformers' ROPE_INIT_FUNCTIONS ("default", "linear", "yarn") and the
 * cos/sin tables the engine feeds to the attention graphs. Tables are computed the way PyTorch does (float32 inv_freq,
 * float32 position × frequency products) so long positions match the reference closely.
 */
import { fail } from '../errors.js';
import type { ConfigReader } from './_config.js';
import type { RopeLayout, RopeSpec } from './types.js';

/** YaRN's magnitude correction, transformers `get_mscale` / DeepSeek `yarn_get_mscale`. */
export function yarnMscale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

/** The rope_scaling object of a config (older configs use "type", newer "rope_type"), or null. */
export function ropeScaling(cfg: ConfigReader): Record<string, unknown> | null {
  const s = cfg.object('rope_scaling') ?? cfg.object('rope_parameters');
  if (!s) return null;
  const type = (s['rope_type'] ?? s['type'] ?? 'default') as string;
  return type === 'default' ? null : { ...s, rope_type: type };
}

function numberField(s: Record<string, unknown>, key: string, fallback?: number): number {
  const v = s[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw fail('BAD_CONFIG', `rope_scaling."${key}" is required`);
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw fail('BAD_CONFIG', `rope_scaling."${key}" must be a number`);
  return v;
}

/** Build the RopeSpec for `dim` rotated dimensions per head. */
export function ropeSpec(cfg: ConfigReader, dim: number, layout: RopeLayout): RopeSpec {
  // transformers 5 writes rope_theta inside rope_parameters; older configs have it at the top level.
  const params = cfg.object('rope_parameters');
  const nested = typeof params?.['rope_theta'] === 'number' ? (params['rope_theta'] as number) : undefined;
  const theta = cfg.has('rope_theta') ? cfg.num('rope_theta') : nested ?? 10000;
  const half = dim / 2;
  // PyTorch: inv_freq = 1 / base ** (arange(0, dim, 2).float() / dim), in float32.
  const base = new Float64Array(half);
  for (let i = 0; i < half; i++) base[i] = Math.fround(1 / Math.pow(theta, (2 * i) / dim));
  const scaling = ropeScaling(cfg);
  if (!scaling) return { dim, layout, invFreq: base, cosSinScale: 1 };
  const type = scaling['rope_type'] as string;
  const factor = numberField(scaling, 'factor');
  if (type === 'linear') {
    return { dim, layout, invFreq: base.map((f) => Math.fround(f / factor)), cosSinScale: 1 };
  }
  if (type === 'yarn') return yarn(cfg, scaling, dim, layout, theta, factor);
  throw fail('UNSUPPORTED', `rope_scaling type "${type}" is not supported (supported: default, linear, yarn)`);
}

function yarn(
  cfg: ConfigReader,
  s: Record<string, unknown>,
  dim: number,
  layout: RopeLayout,
  theta: number,
  factor: number,
): RopeSpec {
  const originalMax = numberField(s, 'original_max_position_embeddings', cfg.int('max_position_embeddings', 4096));
  const betaFast = numberField(s, 'beta_fast', 32);
  const betaSlow = numberField(s, 'beta_slow', 1);
  const mscale = s['mscale'] as number | undefined;
  const mscaleAllDim = s['mscale_all_dim'] as number | undefined;
  let attentionFactor = s['attention_factor'] as number | undefined;
  if (attentionFactor === undefined || attentionFactor === null) {
    attentionFactor =
      mscale && mscaleAllDim ? yarnMscale(factor, mscale) / yarnMscale(factor, mscaleAllDim) : yarnMscale(factor);
  }
  const truncate = s['truncate'] === undefined ? true : Boolean(s['truncate']);
  const correctionDim = (rotations: number) =>
    (dim * Math.log(originalMax / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
  let low = correctionDim(betaFast);
  let high = correctionDim(betaSlow);
  if (truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001;
  const half = dim / 2;
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    const posFreq = Math.fround(Math.pow(theta, Math.fround((2 * i) / dim)));
    const extrapolation = Math.fround(1 / posFreq);
    const interpolation = Math.fround(1 / Math.fround(factor * posFreq));
    const ramp = Math.min(1, Math.max(0, Math.fround((i - low) / (high - low))));
    const extrapolationFactor = Math.fround(1 - ramp);
    invFreq[i] = Math.fround(
      Math.fround(interpolation * Math.fround(1 - extrapolationFactor)) +
        Math.fround(extrapolation * extrapolationFactor),
    );
  }
  return { dim, layout, invFreq, cosSinScale: attentionFactor };
}

/**
 * cos and sin tables [numPositions, dim] for positions start..start+numPositions-1, in the rotate_half layout
 * (emb = cat(freqs, freqs)); the interleaved layout is handled in the graph by de-interleaving q/k first.
 */
export function ropeTables(rope: RopeSpec, start: number, numPositions: number): { cos: Float32Array; sin: Float32Array } {
  const { dim, invFreq, cosSinScale } = rope;
  const half = dim / 2;
  const cos = new Float32Array(numPositions * dim);
  const sin = new Float32Array(numPositions * dim);
  for (let p = 0; p < numPositions; p++) {
    const pos = start + p;
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(pos * invFreq[i]!);
      const c = Math.fround(Math.cos(angle)) * cosSinScale;
      const s = Math.fround(Math.sin(angle)) * cosSinScale;
      cos[p * dim + i] = c;
      cos[p * dim + i + half] = c;
      sin[p * dim + i] = s;
      sin[p * dim + i + half] = s;
    }
  }
  return { cos, sin };
}
