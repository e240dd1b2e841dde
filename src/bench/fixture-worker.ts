/**
 * Benchmark worker for one model directory (run in its own process by main.ts):
 *   node dist/bench/fixture-worker.js <modelDir> <dataFile> <windows> <seqLen> <repeats>
 * Tokenizes the data, runs the windows once cold (engine + session creation included) and `repeats` times warm,
 * and prints one JSON result line (see FixtureResult).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadTokenizer } from '../checkpoint/tokenizer.js';
import { createEngine } from '../engine/engine.js';
import { ParallelNll, planWorkers } from '../engine/parallel-nll.js';
import { consecutiveWindows, readTextData } from '../eval/data.js';
import { emit, peakRssMb } from './proc.js';

/** Cold and warm timings of one way of running the windows (see timeRuns). */
export interface RunTimings {
  /** Setup (createEngine or ParallelNll.start: sessions, weights, graphs) + first run. */
  coldMs: number;
  coldTokensPerSec: number;
  /** Every warm run: wall ms, ms inside onnxruntime session.run. */
  warmRuns: { wallMs: number; ortMs: number }[];
  /** Median warm run. */
  warmMs: number;
  warmTokensPerSec: number;
  bestTokensPerSec: number;
}

export interface FixtureResult extends RunTimings {
  fixture: string;
  windows: number;
  seqLen: number;
  tokens: number;
  tokenizeMs: number;
  /** pool.runMs / wall of the median warm run. */
  ortShare: number;
  ppl: number;
  referencePpl: number | null;
  peakRssMb: number;
  device: string;
  threads: number;
  /** The same windows on ParallelNll (what `moe-quant eval` uses on larger data), one worker per core. */
  parallel: ParallelFixtureResult | null;
}

export interface ParallelFixtureResult extends RunTimings {
  workers: number;
  threadsPerWorker: number;
  batchTokens: number;
  /** ORT ms summed over workers / (wall × workers): how busy the workers' onnxruntime kept them. */
  ortShare: number;
  ppl: number;
  /** Peak RSS of the process at the end (single engine + workers' copies of the weights). */
  peakRssMb: number;
}

/** One cold run (from `start`, which includes setup) then `repeats` warm runs; median and best of the warm ones. */
async function timeRuns(
  tokens: number,
  start: number,
  repeats: number,
  runOnce: () => Promise<{ nll: Float32Array; ortMs: number }>,
): Promise<RunTimings & { medianOrtMs: number; nll: Float32Array }> {
  await runOnce();
  const coldMs = performance.now() - start;
  const warmRuns: { wallMs: number; ortMs: number }[] = [];
  let nll!: Float32Array;
  for (let r = 0; r < repeats; r++) {
    const tw = performance.now();
    const out = await runOnce();
    warmRuns.push({ wallMs: performance.now() - tw, ortMs: out.ortMs });
    nll = out.nll;
  }
  const sorted = [...warmRuns].sort((a, b) => a.wallMs - b.wallMs);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  const perSec = (ms: number) => tokens / (ms / 1000);
  return {
    coldMs,
    coldTokensPerSec: perSec(coldMs),
    warmRuns,
    warmMs: median.wallMs,
    warmTokensPerSec: perSec(median.wallMs),
    bestTokensPerSec: perSec(sorted[0]!.wallMs),
    medianOrtMs: median.ortMs,
    nll,
  };
}

/** Time the windows on one worker per core (none on a one-core machine). */
async function runParallel(dir: string, windows: Int32Array[], seqLen: number, repeats: number, numLayers: number): Promise<ParallelFixtureResult | null> {
  const cores = os.availableParallelism();
  if (cores < 2) return null;
  const tokens = windows.length * seqLen;
  const plan = planWorkers({ device: 'cpu', requested: cores, windows: windows.length, seqLen, modelBytes: 0, resident: true });
  const tc = performance.now();
  const parallel = await ParallelNll.start(dir, {}, plan, numLayers);
  try {
    const { nll, medianOrtMs, ...t } = await timeRuns(tokens, tc, repeats, () => parallel.run(windows, { batchTokens: plan.batchTokens }));
    return {
      workers: plan.workers,
      threadsPerWorker: plan.threadsPerWorker,
      batchTokens: plan.batchTokens,
      ...t,
      ortShare: medianOrtMs / (t.warmMs * plan.workers),
      ppl: Math.exp(meanNll(nll, windows.length, seqLen)),
      peakRssMb: peakRssMb(),
    };
  } finally {
    await parallel.close();
  }
}

function meanNll(nll: Float32Array, windows: number, seqLen: number): number {
  let s = 0;
  for (let w = 0; w < windows; w++) for (let i = 0; i < seqLen - 1; i++) s += nll[w * seqLen + i]!;
  return s / (windows * (seqLen - 1));
}

async function main(): Promise<void> {
  const [dir, data, windowsArg, seqLenArg, repeatsArg] = process.argv.slice(2);
  if (!dir || !data) throw new Error('usage: fixture-worker.js <modelDir> <dataFile> [windows] [seqLen] [repeats]');
  const nWindows = Number(windowsArg ?? 40);
  const seqLen = Number(seqLenArg ?? 256);
  const repeats = Math.max(1, Number(repeatsArg ?? 3));

  const t0 = performance.now();
  const ids = loadTokenizer(dir).encode(readTextData(data));
  const windows = consecutiveWindows(ids, seqLen, nWindows);
  const tokens = windows.length * seqLen;
  const tokenizeMs = performance.now() - t0;

  const tc = performance.now();
  const engine = await createEngine(dir, { device: 'cpu' });
  let result: FixtureResult;
  try {
    const { nll, medianOrtMs, ...t } = await timeRuns(tokens, tc, repeats, async () => {
      const ort0 = engine.pool.runMs;
      const { nll } = await engine.forward.run(windows, { head: 'nll' });
      return { nll: nll!, ortMs: engine.pool.runMs - ort0 };
    });
    const refFile = path.join(dir, 'reference.json');
    let referencePpl: number | null = null;
    if (fs.existsSync(refFile)) {
      // Only comparable when the protocol matches (first `windows` windows of `seqLen` on the same data file).
      const ref = JSON.parse(fs.readFileSync(refFile, 'utf8')) as Record<string, unknown>;
      const v = ref[`ppl_seq${seqLen}_first${windows.length}:${path.basename(data)}`];
      referencePpl = typeof v === 'number' ? v : null;
    }
    result = {
      fixture: path.basename(path.resolve(dir)),
      windows: windows.length,
      seqLen,
      tokens,
      tokenizeMs,
      ...t,
      ortShare: medianOrtMs / t.warmMs,
      ppl: Math.exp(meanNll(nll, windows.length, seqLen)),
      referencePpl,
      peakRssMb: peakRssMb(),
      device: engine.device,
      threads: engine.pool.threads ?? os.availableParallelism(),
      parallel: null,
    };
  } finally {
    await engine.close();
  }
  result.parallel = await runParallel(dir, windows, seqLen, repeats, engine.model.spec.numLayers);
  emit(result);
}

main().catch((e: unknown) => {
  process.stderr.write(`fixture-worker: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
