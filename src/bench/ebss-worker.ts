/**
 * Bench worker (one fixture per process): EBSS generation of `samples` × `seqLen` tokens (width 4, τ 1.2, as
 * published): wall time, tokens/s, and the mean step time at positions 16, 256 and 511 (a step's cost should grow
 * with the prefix only through attention). Prints one JSON object on stdout.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sampleEbss } from '../calibration/samplers/ebss.js';
import { createEngine } from '../engine/engine.js';
import { emit } from './proc.js';

export interface EbssBenchResult {
  fixture: string;
  samples: number;
  seqLen: number;
  width: number;
  seconds: number;
  tokensPerSecond: number;
  stepMs: Record<string, number | null>;
  distinct4gram: number;
}

async function main(): Promise<void> {
  const [dir, samplesArg, seqLenArg] = process.argv.slice(2) as [string, string, string];
  const samples = Number(samplesArg);
  const seqLen = Number(seqLenArg);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-ebss-'));
  const engine = await createEngine(dir, { device: 'cpu' });
  try {
    const set = await sampleEbss({ engine, model: dir, samples, seqLen, seed: 0, dir: tmp }, { width: 4, tau: 1.2 });
    const run = set.info['run'] as { seconds: number; tokens_per_second: number; step_ms: Record<string, number | null> };
    const result: EbssBenchResult = {
      fixture: path.basename(dir),
      samples,
      seqLen,
      width: 4,
      seconds: run.seconds,
      tokensPerSecond: run.tokens_per_second,
      stepMs: run.step_ms,
      distinct4gram: set.info['distinct_4gram'] as number,
    };
    emit(result);
  } finally {
    await engine.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

void main();
