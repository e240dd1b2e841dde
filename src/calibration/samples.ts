/**
 * Calibration samples as GPTQ draws them: `samples` windows of `seqLen` tokens at uniformly random start offsets of
 * the tokenized data, from a seeded generator so the same seed always gives the same windows.
 */
import { fail } from '../errors.js';

/** mulberry32: small, fast, seedable 32-bit PRNG; returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples drawn from `rand` (Box-Muller; uses two uniforms per sample). */
export function normalSampler(rand: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

/** n standard normal samples × scale from seed (tests, benchmarks, reference scripts). */
export function randn(n: number, seed: number, scale = 1): Float32Array {
  const normal = normalSampler(seededRandom(seed));
  return Float32Array.from({ length: n }, () => scale * normal());
}

/** Draw `samples` windows of `seqLen` tokens (copies) from `ids`. */
export function drawWindows(ids: Int32Array, samples: number, seqLen: number, seed: number): Int32Array[] {
  if (!Number.isInteger(samples) || samples < 1) throw fail('BAD_OPTION', `--samples must be a positive integer (got ${samples})`);
  if (!Number.isInteger(seqLen) || seqLen < 2) throw fail('BAD_OPTION', `--seq-len must be an integer ≥ 2 (got ${seqLen})`);
  if (ids.length < seqLen)
    throw fail('BAD_DATA', `the calibration data has ${ids.length} tokens, fewer than one window of --seq-len ${seqLen}`);
  const rand = seededRandom(seed);
  const span = ids.length - seqLen + 1;
  return Array.from({ length: samples }, () => {
    const start = Math.floor(rand() * span);
    return ids.slice(start, start + seqLen);
  });
}
