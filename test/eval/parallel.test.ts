import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it, vi } from 'vitest';
import { SafetensorsFile, writeSafetensors } from '../../src/checkpoint/safetensors.js';
import { loadTokenizer } from '../../src/checkpoint/tokenizer.js';
import { MoeQuantError } from '../../src/errors.js';
import { ParallelNll, planWorkers, type PlanInput } from '../../src/engine/parallel-nll.js';
import { evaluatePerplexity } from '../../src/eval/perplexity.js';
import { FIXTURES, WIKI } from '../paths.js';

const MIXTRAL = path.join(FIXTURES, 'tiny-mixtral');

describe('planWorkers', () => {
  const base: PlanInput = { device: 'cpu', threads: 8, windows: 100, seqLen: 2048, modelBytes: 100 * 2 ** 20, resident: true };

  it('uses one worker per thread for a small resident model with enough work', () => {
    expect(planWorkers(base)).toMatchObject({ workers: 8, threadsPerWorker: 1 });
  });
  it('needs two batches of work per worker', () => {
    // 40 × 256 tokens = 3 batches of 4096: one engine; 16 batches: 8 workers.
    expect(planWorkers({ ...base, windows: 40, seqLen: 256 }).workers).toBe(1);
    expect(planWorkers({ ...base, windows: 64, seqLen: 2048 }).workers).toBe(8);
    expect(planWorkers({ ...base, windows: 10, seqLen: 2048 })).toMatchObject({ workers: 2, threadsPerWorker: 4 });
  });
  it('keeps all copies of the weights within the resident budget', () => {
    expect(planWorkers({ ...base, modelBytes: 700 * 2 ** 20 }).workers).toBe(2);
    expect(planWorkers({ ...base, modelBytes: 1500 * 2 ** 20 }).workers).toBe(1);
    expect(planWorkers({ ...base, modelBytes: 300 * 2 ** 20, cacheBytes: 2 ** 32 }).workers).toBe(8);
  });
  it('gives one-thread workers small batches unless told otherwise', () => {
    expect(planWorkers(base).batchTokens).toBe(1024);
    expect(planWorkers({ ...base, requested: 2 }).batchTokens).toBe(4096);
    expect(planWorkers({ ...base, requested: 4 }).batchTokens).toBe(2048);
    expect(planWorkers({ ...base, requested: 1 }).batchTokens).toBe(4096);
    expect(planWorkers({ ...base, batchTokens: 512 }).batchTokens).toBe(512);
  });
  it('runs streaming models and GPUs in one engine', () => {
    expect(planWorkers({ ...base, resident: false })).toMatchObject({ workers: 1, threadsPerWorker: 8 });
    expect(planWorkers({ ...base, device: 'cuda' }).workers).toBe(1);
  });
  it('honours an explicit count (at most one per window) and rejects impossible ones', () => {
    expect(planWorkers({ ...base, requested: 3 })).toMatchObject({ workers: 3, threadsPerWorker: 2 });
    expect(planWorkers({ ...base, requested: 4, windows: 2 })).toMatchObject({
      workers: 2,
      reason: '--workers 4 asked for, but there are only 2 windows: one worker each',
    });
    expect(planWorkers({ ...base, requested: 3 }).reason).toBe('as requested');
    expect(planWorkers({ ...base, requested: 16 })).toMatchObject({
      workers: 16,
      threadsPerWorker: 1,
      reason: 'as requested; more workers than the 8 threads, so they share them',
    });
    expect(planWorkers({ ...base, requested: 1 })).toMatchObject({ workers: 1, threadsPerWorker: 8 });
    expect(() => planWorkers({ ...base, requested: 0 })).toThrow(/--workers must be a positive integer/);
    expect(() => planWorkers({ ...base, requested: 2, device: 'webgpu' })).toThrow(/CPU provider only/);
  });
});

describe('parallel workers', () => {
  it('give the single engine\'s perplexity on the same windows', async () => {
    const opts = { model: MIXTRAL, data: WIKI, seqLen: 256, maxWindows: 40, device: 'cpu' as const };
    const one = await evaluatePerplexity({ ...opts, workers: 1 });
    const progress: number[] = [];
    const three = await evaluatePerplexity({ ...opts, workers: 3, onProgress: (d, t) => progress.push(d / t) });
    expect(one.workers).toBe(1);
    expect(three.workers).toBe(3);
    expect(three.predictions).toBe(one.predictions);
    // GEMM row blocking depends on batch and thread counts: a few NLLs differ in the last bit.
    expect(Math.abs(three.nll - one.nll)).toBeLessThan(1e-6);
    expect(progress.at(-1)).toBe(1);
    expect(progress.every((f, i) => i === 0 || f >= progress[i - 1]!)).toBe(true);
  });

  it('report a worker\'s user-facing error with its code', async () => {
    const plan = { workers: 2, threadsPerWorker: 1, batchTokens: 1024, reason: 'test' };
    const err = await ParallelNll.start(path.join(FIXTURES, 'no-such-model'), {}, plan, 4).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MoeQuantError);
    expect((err as MoeQuantError).code).toBe('BAD_CHECKPOINT');
    expect((err as MoeQuantError).message).toContain('no-such-model');
  });

  it('stop a busy sibling at a layer-batch when one fails mid-run, never terminating it inside onnxruntime', async () => {
    // Worker 1's windows hold a token whose embedding row is NaN and worker 0's do not: worker 1 fails at once while
    // worker 0 is running. Terminating worker 0 then (inside an onnxruntime run) aborted the process now and then.
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-par-'));
    try {
      const data = path.join(tmp, 'text.txt');
      fs.writeFileSync(data, fs.readFileSync(WIKI, 'utf8').slice(0, 20000));
      const [S, W] = [64, 16];
      const ids = loadTokenizer(MIXTRAL).encode(fs.readFileSync(data, 'utf8'));
      const firstHalf = new Set(ids.slice(0, (W / 2) * S));
      const tok = ids.slice((W / 2) * S, W * S).find((t) => !firstHalf.has(t))!;
      expect(tok).toBeDefined();
      const model = path.join(tmp, 'model');
      fs.cpSync(MIXTRAL, model, { recursive: true });
      fs.chmodSync(path.join(model, 'model.safetensors'), 0o644);
      const src = SafetensorsFile.open(path.join(MIXTRAL, 'model.safetensors'));
      writeSafetensors(
        path.join(model, 'model.safetensors'),
        [...src.tensors.values()].map((t) => ({
          name: t.name,
          dtype: t.dtype,
          shape: t.shape,
          data: () => {
            const b = src.readBytes(t.name);
            if (t.name === 'model.embed_tokens.weight') new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2)[tok * 128] = 0x7fc0; // BF16 NaN
            return b;
          },
        })),
      );
      src.close();
      const terminate = vi.spyOn(Worker.prototype, 'terminate');
      try {
        const err = await evaluatePerplexity({ model, data, seqLen: S, maxWindows: W, workers: 2, device: 'cpu' }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(MoeQuantError);
        expect((err as Error).message).toMatch(new RegExp(`^tensor model\\.embed_tokens\\.weight .* holds 1 NaN in the rows read, the first at index \\[${tok}, 0\\]`));
        expect(terminate).not.toHaveBeenCalled();
      } finally {
        terminate.mockRestore();
      }
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
