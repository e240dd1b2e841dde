/**
 * `npm run bench -- --real`: speed at real models' layer shapes, in one run.
 *  1. The machine's GEMM peak (gemm-peak-worker.js), at the start and again at the end (load check).
 *  2. For each shape, a checkpoint with its real layer shapes (scripts/bench/make_real_shapes.py: written by
 *     transformers itself, random weights, vocabulary 4096; generated once into --real-dir when Python is there):
 *     forward tokens/s and the fraction of the GEMM peak it reaches (FLOPs per token from the shapes), calibrate and
 *     quantize seconds per layer (real-worker.js, one process per stage), and the same work in transformers eager
 *     (scripts/bench/torch_eager.py, same windows) and in the PyTorch reference pipeline
 *     (scripts/quant-reference/pipeline_reference.py, same calibration windows, one capture pass per layer).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { moeLayers } from '../architectures/types.js';
import { openModel } from '../engine/model.js';
import type { BenchOptions } from './args.js';
import { C4_SAMPLE } from './args.js';
import type { GemmPeakResult } from './gemm-peak-worker.js';
import { REPO_ROOT, runChild, runNodeWorker, tail, type ChildResult } from './proc.js';
import type { CalibrateStageResult, ForwardStageResult, QuantizeStageResult } from './real-worker.js';
import type { TorchResult } from './torch.js';

type Failed = { error: string };
const failed = (r: ChildResult<unknown>, what: string): Failed => ({ error: `${what} exited with ${r.code}: ${tail(r.stderr, 3)}` });

export interface ReferenceResult {
  seconds: number;
  layerSeconds: number[];
  peakRssMb: number;
  method: string;
  hessianDtype: string;
}

export interface RealShapeReport {
  shape: string;
  dir: string;
  generated: boolean;
  forward?: ForwardStageResult | Failed;
  torch?: (TorchResult & { peakRssMb: number; loadSeconds: number }) | Failed;
  calibrate?: CalibrateStageResult | Failed;
  quantize?: QuantizeStageResult | Failed;
  quantizeOnePass?: QuantizeStageResult | Failed;
  reference?: ReferenceResult | Failed;
}

export interface RealReport {
  peakBefore: GemmPeakResult | Failed;
  peakAfter: GemmPeakResult | Failed | null;
  shapes: RealShapeReport[];
}

const log = (s: string) => process.stderr.write(`${s}\n`);

async function gemmPeak(): Promise<GemmPeakResult | Failed> {
  log('bench: GEMM peak (4096³ float32 MatMul, all cores)…');
  const r = await runNodeWorker<GemmPeakResult>('gemm-peak-worker.js', ['4096', '5'], [], false);
  return r.result ?? failed(r, 'gemm-peak-worker');
}

/** The checkpoint of a shape, generated with make_real_shapes.py when missing (and Python is there). */
async function checkpoint(o: BenchOptions, shape: string): Promise<{ dir: string; generated: boolean } | Failed> {
  const dir = path.join(o.realDir, `${shape}-${o.realLayers}l`);
  if (fs.existsSync(path.join(dir, 'config.json')) && fs.existsSync(path.join(dir, 'real-shape.json'))) return { dir, generated: false };
  if (!o.python) return { error: `${dir} is missing and there is no Python to generate it (--python, or .venv/bin/python)` };
  log(`bench: ${shape}: generating ${o.realLayers} layers with transformers into ${dir}…`);
  const script = path.join(REPO_ROOT, 'scripts', 'bench', 'make_real_shapes.py');
  const r = await runChild(o.python, [script, '--shape', shape, '--layers', String(o.realLayers), '--out', dir], {});
  if (r.code !== 0) return { error: `make_real_shapes.py exited with ${r.code}: ${tail(r.stderr, 3)}` };
  return { dir, generated: true };
}

/** float32 bytes of the model and of one layer's expert Hessians (Σxxᵀ and Σc·xxᵀ), to skip PyTorch runs that cannot fit. */
function torchBytes(dir: string): { model: number; hessians: number } {
  const m = openModel(dir);
  try {
    const model = m.expected.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * 4, 0);
    const hessians = Math.max(
      0,
      ...moeLayers(m.spec).map((l) => l.ffn.routing.numExperts * (m.spec.hiddenSize ** 2 + l.ffn.expertIntermediateSize ** 2) * 4 * 2),
    );
    return { model, hessians };
  } finally {
    m.checkpoint.close();
  }
}

/** An error instead of a run when `bytes` (plus a margin) is more than the memory free now. */
function wontFit(what: string, bytes: number): Failed | null {
  const free = os.freemem();
  return bytes * 1.2 > free ? { error: `${what} skipped: needs ~${(bytes / 1e9).toFixed(1)} GB, ${(free / 1e9).toFixed(1)} GB free` } : null;
}

async function reference(o: BenchOptions, dir: string, calib: string): Promise<ReferenceResult | Failed> {
  const need = torchBytes(dir);
  const skip = wontFit('PyTorch reference pipeline', need.model + need.hessians);
  if (skip) return skip;
  const out = path.join(o.realDir, 'reference-result.json');
  const script = path.join(REPO_ROOT, 'scripts', 'quant-reference', 'pipeline_reference.py');
  const args = [script, '--model', dir, '--calib', calib, '--methods', 'agq', '--bits', '4', '--skip-fp', '--no-eval', '--hessian-dtype', 'float32', '--threads', '2', '--out', out];
  const r = await runChild(o.python!, args, { env: { ...process.env, TOKENIZERS_PARALLELISM: 'false' } });
  if (r.code !== 0 || !fs.existsSync(out)) return { error: `pipeline_reference.py exited with ${r.code}: ${tail(r.stderr || r.stdout, 3)}` };
  let j: { runs: Array<{ quantize_seconds: number; layers: Array<{ seconds: number }> }>; peak_rss_mb: number };
  try {
    // Python's json writes NaN for the per-module rel_error of experts without tokens.
    j = JSON.parse(fs.readFileSync(out, 'utf8').replace(/\bNaN\b/g, 'null')) as typeof j;
  } catch (e) {
    return { error: `pipeline_reference.py wrote unreadable JSON: ${e instanceof Error ? e.message : String(e)}` };
  } finally {
    fs.rmSync(out, { force: true });
  }
  const run = j.runs[0]!;
  return { seconds: run.quantize_seconds, layerSeconds: run.layers.map((l) => l.seconds), peakRssMb: j.peak_rss_mb, method: 'agq', hessianDtype: 'float32' };
}

export async function runReal(o: BenchOptions): Promise<RealReport> {
  const peakBefore = await gemmPeak();
  const shapes: RealShapeReport[] = [];
  const has = (stage: string) => o.realStages.includes(stage);
  for (const shape of o.realShapes) {
    const ck = await checkpoint(o, shape);
    if ('error' in ck) {
      shapes.push({ shape, dir: '', generated: false, forward: ck });
      continue;
    }
    const row: RealShapeReport = { shape, ...ck };
    shapes.push(row);
    const { dir } = ck;
    const wiki = o.data;
    if (has('forward')) {
      log(`bench: ${shape}: forward, ${o.realWindows} × ${o.realSeqLen} tokens…`);
      const r = await runNodeWorker<ForwardStageResult>('real-worker.js', ['forward', dir, wiki, String(o.realWindows), String(o.realSeqLen)], [], false);
      row.forward = r.result ?? failed(r, 'real-worker forward');
    }
    if (has('torch') && o.python) {
      log(`bench: ${shape}: transformers eager on the same windows…`);
      const skip = wontFit('transformers eager', torchBytes(dir).model * 1.3);
      if (skip) row.torch = skip;
      const script = path.join(REPO_ROOT, 'scripts', 'bench', 'torch_eager.py');
      const args = [script, dir, '--data', wiki, '--windows', String(o.realWindows), '--seq-len', String(o.realSeqLen), '--repeats', '1', '--warmup', '0'];
      if (!skip) {
        const r = await runChild<TorchResult & { peakRssMb: number; loadSeconds: number }>(o.python, args, { env: { ...process.env, TOKENIZERS_PARALLELISM: 'false' } });
        row.torch = r.result ?? failed(r, 'torch_eager.py');
      }
    }
    const calib = path.join(o.realDir, `${shape}-${o.realLayers}l.calib`);
    if (has('calibrate') || has('quantize') || has('reference')) {
      log(`bench: ${shape}: calibrate ${o.realSamples} × 512 C4 tokens (default loss-free bias)…`);
      const r = await runNodeWorker<CalibrateStageResult>('real-worker.js', ['calibrate', dir, C4_SAMPLE, String(o.realSamples), '512', calib], [], false);
      row.calibrate = r.result ?? failed(r, 'real-worker calibrate');
    }
    if (row.calibrate && !('error' in row.calibrate)) {
      const q = path.join(o.realDir, `${shape}-${o.realLayers}l.quantized`);
      if (has('quantize')) {
        log(`bench: ${shape}: quantize AGQ 4-bit (true-sequential, the default)…`);
        const r = await runNodeWorker<QuantizeStageResult>('real-worker.js', ['quantize', dir, calib, 'agq', 'sequential', q], [], false);
        row.quantize = r.result ?? failed(r, 'real-worker quantize');
        log(`bench: ${shape}: quantize AGQ 4-bit, one capture pass per layer (the reference's protocol)…`);
        const r1 = await runNodeWorker<QuantizeStageResult>('real-worker.js', ['quantize', dir, calib, 'agq', 'one-pass', q], [], false);
        row.quantizeOnePass = r1.result ?? failed(r1, 'real-worker quantize');
      }
      if (has('reference') && o.python) {
        log(`bench: ${shape}: PyTorch reference pipeline (AGQ 4-bit, same windows)…`);
        row.reference = await reference(o, dir, calib);
      }
    }
    fs.rmSync(calib, { recursive: true, force: true });
  }
  const peakAfter = await gemmPeak();
  return { peakBefore, peakAfter, shapes };
}
