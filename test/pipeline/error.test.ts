import { afterAll, describe, expect, it } from 'vitest';
import { SessionPool } from '../../src/graph/session.js';
import { relativeError } from '../../src/pipeline/error.js';
import { correlatedX, gram, outputError, randn } from '../quantization/helpers.js';

const pool = new SessionPool('cpu');
afterAll(() => pool.release());

describe('relativeError: ‖(W − Ŵ)X‖ / ‖WX‖ from H over its lower block triangle', () => {
  // K = 96: one block; K = 1100: three blocks of 366–367 columns (uneven, off-diagonal blocks doubled).
  for (const [N, K] of [[20, 96], [12, 1100]] as const) {
    it(`K = ${K}: the float64 traces tr(ΔHΔᵀ) / tr(WHWᵀ), with and without a given numerator`, async () => {
      const m = 2 * K;
      const H = gram(correlatedX(m, K, 0.6, K), m, K);
      const W = randn(N * K, 5, 0.05);
      const Q = W.map((v, i) => v + 0.004 * Math.sin(i));
      const num = outputError(W, Q, H, N, K);
      const den = outputError(W, new Float32Array(N * K), H, N, K);
      const full = await relativeError(pool, W, Q, N, K, H);
      expect(Math.abs(full / Math.sqrt(num / den) - 1)).toBeLessThan(1e-4);
      // A numerator from elsewhere (a GPTQ solve's hessianError) replaces the first trace exactly.
      const given = await relativeError(pool, W, Q, N, K, H, 4 * num);
      expect(Math.abs(given / (2 * Math.sqrt(num / den)) - 1)).toBeLessThan(1e-4);
    });
  }
});
