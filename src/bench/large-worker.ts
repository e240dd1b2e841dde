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
 *   arena     — prototype of a fix: one reused float32 buffer sized for the largest layer (or the head), tensors are
 *               views into it, release() rewinds it (no per-layer allocation, no reliance on GC)
 */
import * as ort from 'onnxruntime-node';
import { createEngine, type Engine } from '../engine/engine.js';
import { ForwardEngine } from '../engine/forward.js';
import { openModel } from '../engine/model.js';
import { WeightStore } from '../engine/weights.js';
import type { ExpectedTensor } from '../architectures/shapes.js';
import type { Checkpoint } from '../checkpoint/checkpoint.js';
import { toFloat32 } from '../checkpoint/dtypes.js';
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

/**
 * Prototype: every tensor of a layer (or of the head) is converted into a view of one preallocated float32 buffer,
 * and release() of everything in use rewinds it. Peak weight memory is exactly the largest layer, allocated once.
 */
class ArenaWeightStore extends WeightStore {
  private readonly arena: Float32Array;
  private offset = 0;
  private readonly live = new Map<string, Float32Array>();

  constructor(
    private readonly ckpt: Checkpoint,
    expected: ExpectedTensor[],
  ) {
    super(ckpt, expected, 0);
    const groups = new Map<number | null, number>();
    for (const t of expected) {
      if (t.kind === 'embedding') continue; // read row by row
      groups.set(t.layer, (groups.get(t.layer) ?? 0) + t.shape.reduce((a, b) => a * b, 1));
    }
    this.arena = new Float32Array(Math.max(...groups.values()));
  }

  override get(name: string): Float32Array {
    const hit = this.overrides.get(name) ?? this.live.get(name);
    if (hit) return hit;
    const info = this.ckpt.info(name);
    const n = info.shape.reduce((a, b) => a * b, 1);
    if (this.offset + n > this.arena.length) return super.get(name);
    const dst = this.arena.subarray(this.offset, this.offset + n);
    const bytes = this.ckpt.readBytes(name);
    if (info.dtype === 'BF16') {
      const src = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
      const d = new Uint32Array(dst.buffer, dst.byteOffset, n);
      for (let i = 0; i < n; i++) d[i] = src[i]! << 16;
    } else dst.set(toFloat32(info.dtype, bytes));
    this.offset += n;
    this.live.set(name, dst);
    return dst;
  }

  override release(names: Iterable<string>): void {
    for (const n of names) this.live.delete(n);
    if (this.live.size === 0) this.offset = 0;
  }
}

async function buildEngine(dir: string, variant: string): Promise<Engine> {
  if (variant === 'default') return createEngine(dir, { device: 'cpu', cacheBytes: 0 });
  const gc = variant.includes('gc');
  if (gc && typeof (globalThis as { gc?: unknown }).gc !== 'function') throw new Error('variant gc needs node --expose-gc');
  const model = openModel(dir);
  const pool = variant.includes('noarena') ? new OptionPool({ enableCpuMemArena: false }) : new SessionPool('cpu');
  const weights = variant === 'arena'
    ? new ArenaWeightStore(model.checkpoint, model.expected)
    : gc
      ? new GcWeightStore(model.checkpoint, model.expected, 0)
      : new WeightStore(model.checkpoint, model.expected, 0);
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
  // Memory around every onnxruntime run, to tell weight buffers (JS) from what onnxruntime allocates.
  const pool = engine.pool;
  const plainRun = pool.run.bind(pool);
  let step = 0;
  pool.run = async (session, feeds) => {
    const before = sample(step, 'before ort');
    const out = await plainRun(session, feeds);
    const after = sample(step, `ort ${session.inputNames.includes('w.lmHead') ? 'head' : session.inputNames.includes('combine_pos') ? 'moe' : session.inputNames.includes('w.gate') ? 'dense' : 'attn'}`);
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
