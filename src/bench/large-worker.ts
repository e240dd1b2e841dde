/**
 * Large-model worker (run in its own process by main.ts):
 *   node dist/bench/large-worker.js generate <dir>
 *   node dist/bench/large-worker.js run <dir> [seqs] [seqLen] [variant]
 * `run` pushes seqs×seqLen random token ids through the engine with cacheBytes 0 (layer-by-layer weights) and head
 * 'nll', sampling memory after every unit of work. Variants (for the memory investigation; 'default' is exactly
 * createEngine(dir, { device: 'cpu', cacheBytes: 0 })):
 *   gc        — global.gc() right after each layer's weights are released (needs --expose-gc)
 *   noarena   — sessions created with enableCpuMemArena: false
 *   gc+noarena
 */
import * as ort from 'onnxruntime-node';
import { createEngine, type Engine } from '../engine/engine.js';
import { ForwardEngine } from '../engine/forward.js';
import { openModel } from '../engine/model.js';
import { WeightStore } from '../engine/weights.js';
import { sessionOptions, SessionPool } from '../graph/session.js';
import { emit, peakRssMb } from './proc.js';
import { generateCheckpoint, LARGE_MIXTRAL_CONFIG } from './synth.js';

export interface MemorySample {
  step: number;
  label: string;
  rssMb: number;
  peakRssMb: number;
  arrayBuffersMb: number;
  heapUsedMb: number;
}

export interface LargeRunResult {
  variant: string;
  tokens: number;
  seqs: number;
  seqLen: number;
  setupSeconds: number;
  runSeconds: number;
  seconds: number;
  ortSeconds: number;
  tokensPerSec: number;
  peakRssMb: number;
  meanNll: number;
  samples: MemorySample[];
  /** float32 bytes of the largest layer and of lm_head (what the engine materialises at once). */
  layerF32Mb: number;
  lmHeadF32Mb: number;
}

const MB = 1024 * 1024;

/** SessionPool whose sessions get extra options (the stock pool uses sessionOptions() as is). */
class OptionPool extends SessionPool {
  private readonly own = new Map<string, Promise<ort.InferenceSession>>();
  constructor(private readonly extra: ort.InferenceSession.SessionOptions) {
    super('cpu');
  }
  override get(key: string, build: () => Uint8Array): Promise<ort.InferenceSession> {
    let s = this.own.get(key);
    if (!s) {
      s = ort.InferenceSession.create(build(), { ...sessionOptions('cpu'), ...this.extra });
      this.own.set(key, s);
    }
    return s;
  }
  override async release(): Promise<void> {
    for (const s of this.own.values()) await (await s).release();
    this.own.clear();
    await super.release();
  }
}

/** WeightStore that runs a full GC after each release, so freed layers cannot linger until V8 decides to collect. */
class GcWeightStore extends WeightStore {
  override release(names: Iterable<string>): void {
    super.release(names);
    (globalThis as { gc?: () => void }).gc?.();
  }
}

async function buildEngine(dir: string, variant: string): Promise<Engine> {
  if (variant === 'default') return createEngine(dir, { device: 'cpu', cacheBytes: 0 });
  const gc = variant.includes('gc');
  if (gc && typeof (globalThis as { gc?: unknown }).gc !== 'function') throw new Error('variant gc needs node --expose-gc');
  const model = openModel(dir);
  const pool = variant.includes('noarena') ? new OptionPool({ enableCpuMemArena: false }) : new SessionPool('cpu');
  const weights = gc ? new GcWeightStore(model.checkpoint, model.expected, 0) : new WeightStore(model.checkpoint, model.expected, 0);
  const forward = new ForwardEngine(model.spec, pool, weights);
  return {
    model,
    forward,
    weights,
    pool,
    device: 'cpu',
    deviceNote: `device: cpu (bench variant ${variant})`,
    async close() {
      await pool.release();
      model.checkpoint.close();
    },
  };
}

/** Deterministic pseudo-random token ids. */
function randomSequences(n: number, len: number, vocab: number): Int32Array[] {
  let x = 0x9e3779b9;
  return Array.from({ length: n }, () =>
    Int32Array.from({ length: len }, () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) % vocab;
    }),
  );
}

function sample(step: number, label: string): MemorySample {
  const m = process.memoryUsage();
  return { step, label, rssMb: m.rss / MB, peakRssMb: peakRssMb(), arrayBuffersMb: m.arrayBuffers / MB, heapUsedMb: m.heapUsed / MB };
}

async function run(dir: string, seqs: number, seqLen: number, variant: string): Promise<LargeRunResult> {
  const samples: MemorySample[] = [sample(0, 'start')];
  const t0 = performance.now();
  const engine = await buildEngine(dir, variant);
  const spec = engine.model.spec;
  samples.push(sample(0, 'engine created'));
  const setupSeconds = (performance.now() - t0) / 1000;
  try {
    const sequences = randomSequences(seqs, seqLen, spec.vocabSize);
    const t1 = performance.now();
    const { nll } = await engine.forward.run(sequences, {
      head: 'nll',
      onProgress: (done, total) => samples.push(sample(done, done === total ? 'head' : `layer ${done - 1}`)),
    });
    const runSeconds = (performance.now() - t1) / 1000;
    let s = 0;
    let n = 0;
    for (const v of nll!) if (Number.isFinite(v)) (s += v), n++;
    const layerParams = engine.model.expected.filter((t) => t.layer !== null).reduce((m, t) => m.set(t.layer!, (m.get(t.layer!) ?? 0) + t.shape.reduce((a, b) => a * b, 1)), new Map<number, number>());
    const lmHead = engine.model.expected.find((t) => t.name === spec.lmHead)!;
    return {
      variant,
      tokens: seqs * seqLen,
      seqs,
      seqLen,
      setupSeconds,
      runSeconds,
      seconds: setupSeconds + runSeconds,
      ortSeconds: engine.pool.runMs / 1000,
      tokensPerSec: (seqs * seqLen) / runSeconds,
      peakRssMb: peakRssMb(),
      meanNll: s / n,
      samples,
      layerF32Mb: (Math.max(...layerParams.values()) * 4) / MB,
      lmHeadF32Mb: (lmHead.shape[0]! * lmHead.shape[1]! * 4) / MB,
    };
  } finally {
    await engine.close();
  }
}

async function main(): Promise<void> {
  const [mode, dir, a, b, c] = process.argv.slice(2);
  if (mode === 'generate' && dir) {
    emit({ ...generateCheckpoint(dir, LARGE_MIXTRAL_CONFIG), peakRssMb: peakRssMb() });
  } else if (mode === 'run' && dir) {
    emit(await run(dir, Number(a ?? 2), Number(b ?? 256), c ?? 'default'));
  } else {
    throw new Error('usage: large-worker.js generate <dir> | run <dir> [seqs] [seqLen] [variant]');
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`large-worker: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
