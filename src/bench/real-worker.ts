/**
 * Real-shape worker (one stage per process, so each peak RSS is its own), run by main.ts with --real:
 *   node dist/bench/real-worker.js forward   <model> <data> <windows> <seqLen>
 *   node dist/bench/real-worker.js calibrate <model> <data> <samples> <seqLen> <outDir>
 *   node dist/bench/real-worker.js quantize  <model> <calibDir> <method> <sequential|one-pass> <outDir>
 * forward: the first `windows` non-overlapping windows of the tokenized data (as scripts/bench/torch_eager.py),
 * through createEngine's defaults (what `moe-quant eval` runs with one worker), head 'nll'; the checkpoint's files
 * are read once beforehand (warmPageCache).
 * Every stage reports wall seconds per decoder layer (from its progress ticks) and peak RSS.
 */
import fs from 'node:fs';
import { calibrate } from '../calibration/calibrate.js';
import { loadTokenizer } from '../checkpoint/tokenizer.js';
import { createEngine } from '../engine/engine.js';
import { sequenceBatches } from '../engine/forward.js';
import { modelFingerprint, openModel } from '../engine/model.js';
import { consecutiveWindows, readTextData } from '../eval/data.js';
import { quantizeModel, type QuantizeOptions } from '../pipeline/quantize.js';
import { readCalibrationDir } from '../calibration/calibration-dir.js';
import { forwardFlops } from './flops.js';
import { layerTimes } from './layer-times.js';
import { emit, peakRssMb } from './proc.js';

export interface StageResult {
  stage: 'forward' | 'calibrate' | 'quantize';
  seconds: number;
  /** Wall seconds of each decoder layer (null when the progress could not be split by layer). */
  layerSeconds: number[] | null;
  tokens: number;
  peakRssMb: number;
  /** Whether the engine held the whole model resident (else: streamed layer by layer). */
  resident?: boolean;
}

export interface ForwardStageResult extends StageResult {
  windows: number;
  seqLen: number;
  tokensPerSec: number;
  ppl: number;
  flopsPerToken: { layers: number[]; head: number; total: number };
  ortSeconds: number;
}

export interface CalibrateStageResult extends StageResult {
  maxvio: { natural: number; used: number; naturalSecondHalf: number; usedSecondHalf: number };
}

export interface QuantizeStageResult extends StageResult {
  method: string;
  trueSequential: boolean;
  /** Time inside the GPTQ/RTN solves (quant-report timings). */
  solveSeconds: number;
}

/**
 * Read the checkpoint's files once, untimed: the forward streams its layers from them, and what it is compared with
 * (transformers eager) has its weights in memory before its timed run — so both start from memory, not from a disk
 * whose cache the previous stage (eager's 10+ GB) may have emptied.
 */
function warmPageCache(model: string): void {
  const buf = Buffer.allocUnsafe(64 * 2 ** 20);
  for (const f of fs.readdirSync(model).filter((n) => n.endsWith('.safetensors'))) {
    const fd = fs.openSync(`${model}/${f}`, 'r');
    try {
      while (fs.readSync(fd, buf, 0, buf.length, null) > 0);
    } finally {
      fs.closeSync(fd);
    }
  }
}

async function forward(model: string, data: string, windowsArg: number, seqLen: number): Promise<ForwardStageResult> {
  const ids = loadTokenizer(model).encode(readTextData(data));
  const windows = consecutiveWindows(ids, seqLen, windowsArg);
  warmPageCache(model);
  const engine = await createEngine(model, { device: 'cpu' });
  try {
    const spec = engine.model.spec;
    const B = sequenceBatches(windows.length, seqLen).length;
    const stamps: number[] = [];
    const t0 = performance.now();
    const { nll } = await engine.forward.run(windows, { head: 'nll', onProgress: () => stamps.push(performance.now()) });
    const seconds = (performance.now() - t0) / 1000;
    let sum = 0;
    let n = 0;
    for (const v of nll!) if (Number.isFinite(v)) (sum += v), n++;
    const tokens = windows.length * seqLen;
    return {
      stage: 'forward',
      seconds,
      layerSeconds: layerTimes(t0, stamps, spec.layers.map(() => B), B),
      tokens,
      windows: windows.length,
      seqLen,
      tokensPerSec: tokens / seconds,
      ppl: Math.exp(sum / n),
      flopsPerToken: forwardFlops(spec, (name) => engine.weights.shape(name), seqLen),
      ortSeconds: engine.pool.runMs / 1000,
      peakRssMb: peakRssMb(),
      resident: engine.weights.resident,
    };
  } finally {
    await engine.close();
  }
}

async function calibrateStage(model: string, data: string, samples: number, seqLen: number, out: string): Promise<CalibrateStageResult> {
  const stamps: number[] = [];
  let total = 0;
  fs.rmSync(out, { recursive: true, force: true });
  const r = await calibrate({
    model,
    data: [data],
    out,
    samples,
    seqLen,
    device: 'cpu',
    onProgress: (d, t, stage) => {
      if (stage !== 'calibrate') return;
      stamps.push(performance.now());
      total = t;
    },
  });
  const m = openModel(model);
  const L = m.spec.numLayers;
  m.checkpoint.close();
  const B = total / L;
  const start = stamps[stamps.length - 1]! - r.seconds * 1000;
  const s = r.summary;
  return {
    stage: 'calibrate',
    seconds: r.seconds,
    layerSeconds: Number.isInteger(B) && stamps.length === total ? layerTimes(start, stamps, Array.from({ length: L }, () => B)) : null,
    tokens: samples * seqLen,
    peakRssMb: peakRssMb(),
    maxvio: { natural: s.natural.maxvio, used: s.used.maxvio, naturalSecondHalf: s.natural_second_half.maxvio, usedSecondHalf: s.used_second_half.maxvio },
  };
}

async function quantizeStage(model: string, calib: string, method: string, mode: string, out: string): Promise<QuantizeStageResult> {
  const trueSequential = mode !== 'one-pass';
  // When each decoder layer is handed to the writer (layer 0 includes opening the model and the calibration).
  const layerEnds: number[] = [];
  fs.rmSync(out, { recursive: true, force: true });
  const t0 = performance.now();
  const q = await quantizeModel({
    model,
    calib,
    out,
    method: method as QuantizeOptions['method'],
    trueSequential,
    device: 'cpu',
    timings: true,
    onLayer: () => layerEnds.push(performance.now()),
  });
  const seconds = (performance.now() - t0) / 1000;
  const m = openModel(model);
  const c = readCalibrationDir(calib, modelFingerprint(m));
  m.checkpoint.close();
  fs.rmSync(out, { recursive: true, force: true });
  return {
    stage: 'quantize',
    seconds,
    // Writing the output comes after the last layer.
    layerSeconds: layerEnds.map((t, i) => (t - (i === 0 ? t0 : layerEnds[i - 1]!)) / 1000),
    tokens: c.windows.length * c.windows[0]!.length,
    peakRssMb: peakRssMb(),
    method,
    trueSequential,
    solveSeconds: q.report.totals.seconds ?? 0,
  };
}

async function main(): Promise<void> {
  const [mode, model, a, b, c, d] = process.argv.slice(2);
  if (mode === 'forward' && model && a && b && c) emit(await forward(model, a, Number(b), Number(c)));
  else if (mode === 'calibrate' && model && a && b && c && d) emit(await calibrateStage(model, a, Number(b), Number(c), d));
  else if (mode === 'quantize' && model && a && b && c && d) emit(await quantizeStage(model, a, b, c, d));
  else throw new Error('usage: real-worker.js forward <model> <data> <windows> <seqLen> | calibrate <model> <data> <samples> <seqLen> <out> | quantize <model> <calib> <method> <sequential|one-pass> <out>');
}

main().catch((e: unknown) => {
  process.stderr.write(`real-worker: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
