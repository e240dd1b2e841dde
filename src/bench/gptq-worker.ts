/**
 * Bench worker: one GPTQ solve of a K × N layer (default 4096 × 4096, group 128, asymmetric) with a Hessian from
 * correlated random inputs — the largest single Cholesky + GPTQ solve a 4k-hidden model needs; timed warm (after
 * one solve that creates the sessions) and cold. Prints JSON.
 * For the side-by-side with PyTorch see scripts/quant-reference/README.md.
 */
import { SessionPool } from '../graph/session.js';
import { gptqQuantize } from '../quantization/gptq.js';
import { gemm } from '../quantization/ort-gemm.js';
import { normalSampler, seededRandom } from '../calibration/samples.js';
import { emit } from './proc.js';

async function main(): Promise<void> {
  const N = Number(process.argv[2] ?? 4096);
  const K = Number(process.argv[3] ?? 4096);
  const threads = process.argv[4] ? Number(process.argv[4]) : undefined;
  const pool = new SessionPool('cpu', threads);
  const gauss = normalSampler(seededRandom(1));
  const W = Float32Array.from({ length: N * K }, () => gauss() * 0.02);
  // Correlated inputs: X = Z · M with a random mixing matrix, 2K samples; H = XᵀX (in onnxruntime).
  const samples = 2 * K;
  const Z = Float32Array.from({ length: samples * 64 }, gauss);
  const M = Float32Array.from({ length: 64 * K }, gauss);
  const noise = Float32Array.from({ length: samples * K }, () => gauss() * 0.1);
  const X = await gemm(pool, { a: Z, aDims: [samples, 64], b: M, bDims: [64, K], c: noise, beta: 1 });
  const H = await gemm(pool, { a: X, aDims: [samples, K], b: X, bDims: [samples, K], transA: true });
  // Twice: the first solve also creates its onnxruntime sessions; the second is what a model's next layer pays.
  const solve = async () => {
    const t0 = performance.now();
    const r = await gptqQuantize(W, N, K, H, { bits: 4, groupSize: 128, sym: false }, pool);
    return { r, seconds: (performance.now() - t0) / 1000 };
  };
  const cold = await solve();
  const { r, seconds } = await solve();
  emit({ N, K, seconds, coldSeconds: cold.seconds, loss: r.loss, threads: threads ?? 'all' });
  await pool.release();
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
