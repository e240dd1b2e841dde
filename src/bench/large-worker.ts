/**
 * Large-model worker (run in its own process by main.ts):
 *   node dist/bench/large-worker.js generate <dir>
 *   node dist/bench/large-worker.js run <dir> [seqs] [seqLen]
 * `run` pushes seqs×seqLen random token ids through createEngine(dir, { device: 'cpu', cacheBytes: 0 }) (weights
 * streamed layer by layer, experts in chunks) with head 'nll', sampling memory after every unit of work.
 */
import { createEngine } from '../engine/engine.js';
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

async function run(dir: string, seqs: number, seqLen: number): Promise<LargeRunResult> {
  const samples: MemorySample[] = [sample(0, 'start')];
  const t0 = performance.now();
  const engine = await createEngine(dir, { device: 'cpu', cacheBytes: 0 });
  const spec = engine.model.spec;
  samples.push(sample(0, 'engine created'));
  // Memory around every onnxruntime run, to tell weight buffers (JS) from what onnxruntime allocates.
  const pool = engine.pool;
  const plainRun = pool.run.bind(pool);
  let step = 0;
  pool.run = async (session, feeds) => {
    const before = sample(step, 'before ort');
    const out = await plainRun(session, feeds);
    const after = sample(step, `ort ${session.inputNames.includes('w.lmHead') ? 'head' : session.inputNames.includes('combine_pos') ? 'moe' : session.inputNames.includes('rows.0') ? 'experts' : session.inputNames.includes('w.gate') ? 'dense' : 'attn'}`);
    samples.push(before, after);
    return out;
  };
  const setupSeconds = (performance.now() - t0) / 1000;
  try {
    const sequences = randomSequences(seqs, seqLen, spec.vocabSize);
    const t1 = performance.now();
    const { nll } = await engine.forward.run(sequences, {
      head: 'nll',
      onProgress: (done, total) => samples.push(sample((step = done), done === total ? 'head done' : `layer ${done - 1} done`)),
    });
    const runSeconds = (performance.now() - t1) / 1000;
    let s = 0;
    let n = 0;
    for (const v of nll!) if (Number.isFinite(v)) (s += v), n++;
    const layerParams = engine.model.expected.filter((t) => t.layer !== null).reduce((m, t) => m.set(t.layer!, (m.get(t.layer!) ?? 0) + t.shape.reduce((a, b) => a * b, 1)), new Map<number, number>());
    const lmHead = engine.model.expected.find((t) => t.name === spec.lmHead)!;
    return {
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
  const [mode, dir, a, b] = process.argv.slice(2);
  if (mode === 'generate' && dir) {
    emit({ ...generateCheckpoint(dir, LARGE_MIXTRAL_CONFIG), peakRssMb: peakRssMb() });
  } else if (mode === 'run' && dir) {
    emit(await run(dir, Number(a ?? 2), Number(b ?? 256)));
  } else {
    throw new Error('usage: large-worker.js generate <dir> | run <dir> [seqs] [seqLen]');
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`large-worker: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
