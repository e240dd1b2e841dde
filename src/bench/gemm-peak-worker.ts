/**
 * Bench worker: the machine's GEMM peak as the engine sees it — one large float32 MatMul (M = N = K = size, default
 * 4096: 137 GFLOP) on onnxruntime's CPU provider with all cores, one warm-up then `runs` timed runs. Prints JSON.
 *   node dist/bench/gemm-peak-worker.js [size] [runs]
 */
import os from 'node:os';
import { SessionPool } from '../graph/session.js';
import { gemm } from '../quantization/ort-gemm.js';
import { randn } from '../calibration/samples.js';
import { emit } from './proc.js';

export interface GemmPeakResult {
  size: number;
  threads: number;
  /** GFLOP/s of every timed run, in order. */
  runs: number[];
  best: number;
  median: number;
}

async function main(): Promise<void> {
  const size = Number(process.argv[2] ?? 4096);
  const count = Number(process.argv[3] ?? 5);
  const pool = new SessionPool('cpu');
  const a = randn(size * size, 1);
  const b = randn(size * size, 2);
  const flop = 2 * size ** 3;
  const runs: number[] = [];
  for (let i = 0; i <= count; i++) {
    const t0 = performance.now();
    await gemm(pool, { a, aDims: [size, size], b, bDims: [size, size] });
    if (i > 0) runs.push(flop / ((performance.now() - t0) / 1000) / 1e9);
  }
  const sorted = [...runs].sort((x, y) => x - y);
  const threads = os.availableParallelism();
  emit({ size, threads, runs, best: sorted[sorted.length - 1]!, median: sorted[Math.floor(sorted.length / 2)]! } satisfies GemmPeakResult);
  await pool.release();
}

main().catch((e: unknown) => {
  process.stderr.write(`gemm-peak-worker: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
