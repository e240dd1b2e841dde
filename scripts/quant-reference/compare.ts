/**
 * TypeScript side of the GPTQ cross-check against gptq_reference.py (PyTorch). Dev-only.
 *
 * Builds a random layer W [N, K] and a Hessian H = XᵀX from inputs with correlated columns, runs gptqQuantize,
 * and writes one safetensors file with W, H, the TypeScript result (q_ts, scales_ts, zeros_ts, g_idx_ts) and the
 * configuration + timings as metadata. gptq_reference.py reads that file, runs the reference fasterquant and
 * prints the comparison. Usage (from the repository root):
 *
 *   npx tsc -p scripts/quant-reference/tsconfig.json
 *   node scripts/quant-reference/.build/scripts/quant-reference/compare.js --n 256 --k 512 --group 128 \
 *        --out scripts/quant-reference/case.safetensors [--bits 4] [--sym] [--act-order] [--static-groups] [--seed 1]
 *        [--threads T]   (onnxruntime intra-op threads; default all cores)
 *   .venv/bin/python scripts/quant-reference/gptq_reference.py scripts/quant-reference/case.safetensors
 */
import { parseArgs } from 'node:util';
import { tensorBytes, writeSafetensors } from '../../src/checkpoint/writer.js';
import { SessionPool } from '../../src/graph/session.js';
import { gptqQuantize } from '../../src/quantization/gptq.js';
import { hinvUpper } from '../../src/quantization/linalg.js';
import { gemm } from '../../src/quantization/ort-gemm.js';

import { randn } from '../../src/calibration/samples.js';

const { values: a } = parseArgs({
  options: {
    n: { type: 'string', default: '256' },
    k: { type: 'string', default: '512' },
    bits: { type: 'string', default: '4' },
    group: { type: 'string', default: '128' },
    sym: { type: 'boolean', default: false },
    'act-order': { type: 'boolean', default: false },
    'static-groups': { type: 'boolean', default: false },
    seed: { type: 'string', default: '1' },
    threads: { type: 'string' },
    out: { type: 'string', default: 'scripts/quant-reference/case.safetensors' },
  },
});
const N = Number(a.n);
const K = Number(a.k);
const seed = Number(a.seed);
const cfg = { bits: Number(a.bits), groupSize: Number(a.group), sym: a.sym!, actOrder: a['act-order']!, staticGroups: a['static-groups']! };

const pool = new SessionPool('cpu', a.threads ? Number(a.threads) : undefined);
// Calibration-like inputs: m = 2K tokens, AR(1)-correlated columns with varied scales, a few dead columns.
const m = 2 * K;
const X = randn(m * K, seed, 1);
const colScale = randn(K, seed + 1, 1).map((v) => 0.3 + Math.abs(v));
for (let r = 0; r < m; r++) {
  const row = r * K;
  for (let c = 1; c < K; c++) X[row + c] = 0.8 * X[row + c - 1]! + 0.6 * X[row + c]!;
  for (let c = 0; c < K; c++) X[row + c] *= c % 97 === 13 ? 0 : colScale[c]!;
}
const H = await gemm(pool, { a: X, aDims: [m, K], b: X, bDims: [m, K], transA: true });
const W = randn(N * K, seed + 2, 0.02);

// Warm-up on a small problem so session creation is not timed.
const k0 = Math.min(K, 512);
const Hs = new Float32Array(k0 * k0);
for (let i = 0; i < k0; i++) Hs.set(H.subarray(i * K, i * K + k0), i * k0);
await gptqQuantize(W.subarray(0, 8 * k0), 8, k0, Hs, { ...cfg, groupSize: -1 }, pool);

pool.runMs = 0;
const t0 = performance.now();
const res = await gptqQuantize(W, N, K, H, cfg, pool);
const totalMs = performance.now() - t0;
const ortMs = pool.runMs;

// The Cholesky / inverse alone, on the damped H (same dampening as gptqQuantize).
const Hd = Float32Array.from(H);
let mean = 0;
for (let i = 0; i < K; i++) mean += (Hd[i * K + i] === 0 ? 1 : Hd[i * K + i]!) / K;
for (let i = 0; i < K; i++) Hd[i * K + i] = (Hd[i * K + i] === 0 ? 1 : Hd[i * K + i]!) + 0.01 * mean;
const t1 = performance.now();
await hinvUpper(Hd, K, pool);
const cholMs = performance.now() - t1;

const G = K / res.groupSize;
writeSafetensors(
  a.out!,
  [
    { name: 'W', dtype: 'F32', shape: [N, K], data: tensorBytes(W) },
    { name: 'H', dtype: 'F32', shape: [K, K], data: tensorBytes(H) },
    { name: 'q_ts', dtype: 'U8', shape: [N, K], data: res.q },
    { name: 'scales_ts', dtype: 'F32', shape: [N, G], data: tensorBytes(res.scales) },
    { name: 'zeros_ts', dtype: 'U8', shape: [N, G], data: res.zeros },
    { name: 'g_idx_ts', dtype: 'I32', shape: [K], data: tensorBytes(res.gIdx) },
  ],
  {
    config: JSON.stringify({ ...cfg, damp: 0.01, blockSize: 128 }),
    ts: JSON.stringify({ loss: res.loss, totalMs, ortMs, cholInverseMs: cholMs, damp: res.damp }),
  },
);
console.log(`TS  N=${N} K=${K} ${JSON.stringify(cfg)}`);
console.log(`TS  loss=${res.loss.toPrecision(8)} total=${totalMs.toFixed(0)} ms (onnxruntime ${ortMs.toFixed(0)} ms) chol+inverse=${cholMs.toFixed(0)} ms`);
await pool.release();
