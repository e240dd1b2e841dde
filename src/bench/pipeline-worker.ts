/**
 * Bench worker (one fixture per process): calibrate vs plain eval over the same 128 × 512 calibration tokens
 * (issue-3 target: calibrate ≤ 2× eval), and quantize wall time per method (RTN, GPTQ, AGQ) from that calibration.
 * Prints one JSON object on stdout.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { calibrate } from '../calibration/calibrate.js';
import { drawWindows } from '../calibration/samples.js';
import { loadTokenizer } from '../checkpoint/tokenizer.js';
import { createEngine } from '../engine/engine.js';
import { readTextData } from '../eval/data.js';
import { quantizeModel } from '../pipeline/quantize.js';
import { emit } from './proc.js';

export interface PipelineResult {
  fixture: string;
  tokens: number;
  evalSeconds: number;
  calibrateSeconds: number;
  calibrateRatio: number;
  quantize: Array<{ method: string; seconds: number; solveSeconds: number; largestSolve: { module: string; seconds: number } }>;
}

async function main(): Promise<void> {
  const [dir, data, samplesArg, seqLenArg] = process.argv.slice(2) as [string, string, string, string];
  const samples = Number(samplesArg);
  const seqLen = Number(seqLenArg);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-pipeline-'));
  try {
    const windows = drawWindows(loadTokenizer(dir).encode(readTextData(data)), samples, seqLen, 0);
    const engine = await createEngine(dir, { device: 'cpu' });
    await engine.forward.run(windows.slice(0, 1), { head: 'none' }); // sessions and weights warm
    const t0 = performance.now();
    await engine.forward.run(windows, { head: 'none', batchTokens: 4096 });
    const evalSeconds = (performance.now() - t0) / 1000;
    await engine.close();
    const calib = await calibrate({ model: dir, data: [data], out: path.join(tmp, 'calib'), samples, seqLen, device: 'cpu' });
    const quantize: PipelineResult['quantize'] = [];
    for (const method of ['rtn', 'gptq', 'agq'] as const) {
      const t1 = performance.now();
      const q = await quantizeModel({ model: dir, out: path.join(tmp, method), calib: calib.out, method, device: 'cpu', timings: true });
      const largest = q.report.modules.reduce((a, b) => ((b.seconds ?? 0) > (a.seconds ?? 0) ? b : a));
      quantize.push({
        method,
        seconds: (performance.now() - t1) / 1000,
        solveSeconds: q.report.totals.seconds ?? 0,
        largestSolve: { module: largest.module, seconds: largest.seconds ?? 0 },
      });
    }
    const result: PipelineResult = {
      fixture: path.basename(dir),
      tokens: samples * seqLen,
      evalSeconds,
      calibrateSeconds: calib.seconds,
      calibrateRatio: calib.seconds / evalSeconds,
      quantize,
    };
    emit(result);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
