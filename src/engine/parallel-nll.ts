/**
 * Data-parallel NLL on the CPU provider: several worker threads, each with its own engine and a share of the
 * intra-op threads, run contiguous shares of the windows at the same time.
 *
 * Why: at the sizes MoE layers run at (many small per-expert GEMMs, element-wise ops, routing in JavaScript), one
 * onnxruntime session keeps two cores only ~75% busy. Two one-thread engines on the windows' two halves keep both
 * busy: on the tiny fixtures (2 cores) throughput rises 1.26–1.33×. The price is one resident copy of the weights
 * per worker, so the automatic plan only does this for models small enough to hold that many times (planWorkers).
 *
 * Windows are independent, so the result is the per-window NLL of a single engine, up to float rounding: GEMM
 * row blocking changes with batch and thread counts, and a few NLLs move in the last bit (measured ≤ 4e-6).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { fail } from '../errors.js';
import { WorkerClient, type ErrorReply } from '../worker-client.js';
import type { ResolvedDevice } from '../graph/session.js';
import { compareSteps, type CompareOptions, type ComparedPositions } from './compare.js';
import type { EngineOptions } from './engine.js';
import { progressSteps, sequenceBatches } from './forward.js';

/** What a worker is started with (workerData). */
export interface NllWorkerInit {
  model: string;
  /** Also open this model, as the reference of 'compare' requests (eval --reference). */
  reference?: string;
  engine: EngineOptions;
}

/** Main thread → worker. */
export type NllWorkerRequest =
  | { type: 'run'; windows: Int32Array[]; batchTokens?: number }
  | { type: 'compare'; windows: Int32Array[]; batchTokens?: number; hiddenBytes?: number }
  | { type: 'close' };

/** Worker → main thread. */
export type NllWorkerReply =
  | { type: 'ready' }
  | { type: 'progress'; done: number }
  | { type: 'result'; nll: Float32Array; ortMs: number }
  | { type: 'compared'; positions: ComparedPositions; ortMs: number }
  | ErrorReply;

export interface WorkerPlan {
  workers: number;
  threadsPerWorker: number;
  /**
   * Tokens per onnxruntime run in each worker: as asked, else 1024 per intra-op thread (at most 4096). A one-thread
   * engine is fastest on small batches whose activations stay in its core's cache (tiny fixtures, 2 workers:
   * 1024 instead of 4096 tokens is 5–10% faster and halves peak RSS); a single engine with all threads on 4096.
   */
  batchTokens: number;
  /** Why this many, in a few words (printed with the device note). */
  reason: string;
}

export interface PlanInput {
  device: ResolvedDevice;
  /** Asked for explicitly (--workers); undefined = automatic. */
  requested?: number;
  /** Intra-op threads in all (default: all cores). */
  threads?: number;
  windows: number;
  seqLen: number;
  batchTokens?: number;
  /** Float32 bytes of the model, and whether it is held resident (WeightStore). */
  modelBytes: number;
  resident: boolean;
  /** The resident-weights budget (EngineOptions.cacheBytes, default 2 GiB); all workers' copies share it. */
  cacheBytes?: number;
}

/**
 * How many workers to use. Automatic: one per core on the CPU provider, but at most one per two batches of work
 * and no more copies of the weights than fit the resident budget.
 * Streaming models (larger than the budget) and GPUs run in one engine.
 */
export function planWorkers(p: PlanInput): WorkerPlan {
  const threads = p.threads ?? Math.max(1, os.availableParallelism());
  if (p.requested !== undefined) {
    if (!Number.isInteger(p.requested) || p.requested < 1) throw fail('BAD_OPTION', `--workers must be a positive integer (got ${p.requested})`);
    if (p.requested > 1 && p.device !== 'cpu') throw fail('BAD_OPTION', `--workers ${p.requested}: parallel workers run on the CPU provider only (device is ${p.device})`);
    if (p.requested > p.windows) return plan(p.windows, `--workers ${p.requested} asked for, but there are only ${p.windows} windows: one worker each`);
    return plan(p.requested, p.requested > threads ? `as requested; more workers than the ${threads} threads, so they share them` : 'as requested');
  }
  if (p.device !== 'cpu') return plan(1, `${p.device} runs one engine`);
  if (!p.resident) return plan(1, 'model streams from disk');
  // Starting a worker and its sessions costs ~0.1 s plus a cold first batch: worth it from two batches each.
  const batches = sequenceBatches(p.windows, p.seqLen, p.batchTokens).length;
  const copies = Math.floor((p.cacheBytes ?? 2 ** 31) / Math.max(1, p.modelBytes));
  const workers = Math.max(1, Math.min(threads, p.windows, Math.floor(batches / 2), copies));
  return plan(workers, workers > 1 ? 'automatic' : batches < 4 ? 'too little work to split' : copies < 2 ? 'one copy of the weights fits the budget' : 'one thread');

  function plan(workers: number, reason: string): WorkerPlan {
    const threadsPerWorker = workers > 1 ? Math.max(1, Math.floor(threads / workers)) : threads;
    const batchTokens = p.batchTokens ?? (workers > 1 ? Math.min(4096, 1024 * threadsPerWorker) : 4096);
    return { workers, threadsPerWorker, batchTokens, reason };
  }
}

/**
 * The worker entry, built to dist/. Under vitest this module runs from src/*.ts, which Node cannot start as a
 * worker, so the build is used (`npm test` builds first).
 */
function workerScript(): string {
  const here = fileURLToPath(import.meta.url);
  const file = here.endsWith('.ts') ? path.resolve(path.dirname(here), '../../dist/engine/nll-worker.js') : path.join(path.dirname(here), 'nll-worker.js');
  if (!fs.existsSync(file)) throw new Error(`parallel workers need the build (${file} is missing): run npm run build`);
  return file;
}

/** One worker thread with its engine; requests run one at a time. */
type NllWorker = WorkerClient<NllWorkerRequest, NllWorkerReply>;

export interface ParallelNllResult {
  /** −log p(next token) per position [N·S], last position of each window NaN (as ForwardEngine.run). */
  nll: Float32Array;
  /** Milliseconds spent inside onnxruntime, summed over workers. */
  ortMs: number;
}

/** The reference model of ParallelNll.compare: its directory and layer count, and both models' hidden sizes summed. */
export interface ParallelReference {
  model: string;
  numLayers: number;
  hiddenPerToken: number;
}

/** A set of started workers, reusable across runs (the benchmark times warm runs). */
export class ParallelNll {
  private constructor(
    private readonly workers: NllWorker[],
    private readonly numLayers: number,
    private readonly reference: ParallelReference | null,
  ) {}

  /**
   * Start `workers` threads, each opening the model with `threadsPerWorker` intra-op threads on the CPU provider —
   * and the reference model too when given (for compare()).
   */
  static async start(
    model: string,
    engine: EngineOptions,
    plan: WorkerPlan,
    numLayers: number,
    reference?: ParallelReference,
  ): Promise<ParallelNll> {
    const script = workerScript();
    const init: NllWorkerInit = { model, reference: reference?.model, engine: { ...engine, device: 'cpu', threads: plan.threadsPerWorker } };
    const workers = Array.from({ length: plan.workers }, (): NllWorker => new WorkerClient(new Worker(script, { workerData: init }), 'parallel worker', ['progress']));
    const pool = new ParallelNll(workers, numLayers, reference ?? null);
    try {
      await Promise.all(workers.map((w) => w.next()));
    } catch (e) {
      await pool.close();
      throw e;
    }
    return pool;
  }

  get size(): number {
    return this.workers.length;
  }

  /**
   * Worker i runs the i-th contiguous share of the windows (`request` builds its message, `steps` counts its units
   * of progress); the replies in share order, null for an empty share.
   */
  private async dispatch(
    windows: Int32Array[],
    request: (share: Int32Array[]) => NllWorkerRequest,
    steps: (n: number, S: number) => number,
    onProgress?: (done: number, total: number) => void,
  ): Promise<(NllWorkerReply | null)[]> {
    const N = windows.length;
    if (N === 0) throw fail('BAD_DATA', 'no sequences to run');
    const S = windows[0]!.length;
    const shares = this.workers.map((_, i) => windows.slice(Math.floor((i * N) / this.size), Math.floor(((i + 1) * N) / this.size)));
    const total = shares.reduce((t, s) => t + (s.length ? steps(s.length, S) : 0), 0);
    const done = shares.map(() => 0);
    return Promise.all(
      shares.map((share, i) => {
        if (share.length === 0) return null;
        // Windows are views of the whole tokenized file; copy the share so only it is sent.
        return this.workers[i]!.next(request(share.map((w) => w.slice())), (m) => {
          if (m.type === 'progress') done[i] = m.done;
          onProgress?.(
            done.reduce((a, b) => a + b, 0),
            total,
          );
        });
      }),
    );
  }

  /** NLL of every window; worker i runs the i-th contiguous share. Progress counts each worker's layer-batches. */
  async run(windows: Int32Array[], opts: { batchTokens?: number; onProgress?(done: number, total: number): void } = {}): Promise<ParallelNllResult> {
    const head = { head: 'nll' as const, batchTokens: opts.batchTokens };
    const replies = await this.dispatch(
      windows,
      (share) => ({ type: 'run', windows: share, batchTokens: opts.batchTokens }),
      (n, S) => progressSteps(this.numLayers, n, S, head),
      opts.onProgress,
    );
    const S = windows[0]!.length;
    const N = windows.length;
    const nll = new Float32Array(N * S);
    let offset = 0;
    let ortMs = 0;
    replies.forEach((r, i) => {
      if (r === null) return;
      if (r.type !== 'result') throw new Error(`parallel worker ${i}: unexpected reply ${r.type}`);
      nll.set(r.nll, offset);
      offset += r.nll.length;
      ortMs += r.ortMs;
    });
    return { nll, ortMs };
  }

  /** comparePositions of every window against the reference (started with one), split between the workers. */
  async compare(windows: Int32Array[], opts: Omit<CompareOptions, 'onProgress'> & { onProgress?(done: number, total: number): void } = {}): Promise<{ positions: ComparedPositions; ortMs: number }> {
    const ref = this.reference;
    if (!ref) throw new Error('ParallelNll.compare: the workers were started without a reference model');
    const replies = await this.dispatch(
      windows,
      (share) => ({ type: 'compare', windows: share, batchTokens: opts.batchTokens, hiddenBytes: opts.hiddenBytes }),
      (n, S) => compareSteps(ref.numLayers, this.numLayers, ref.hiddenPerToken, n, S, opts),
      opts.onProgress,
    );
    const size = windows.length * windows[0]!.length;
    const positions: ComparedPositions = { kl: new Float64Array(size), nllRef: new Float64Array(size), nll: new Float64Array(size), sameTop: new Uint8Array(size) };
    let offset = 0;
    let ortMs = 0;
    replies.forEach((r, i) => {
      if (r === null) return;
      if (r.type !== 'compared') throw new Error(`parallel worker ${i}: unexpected reply ${r.type}`);
      for (const k of ['kl', 'nllRef', 'nll', 'sameTop'] as const) positions[k].set(r.positions[k], offset);
      offset += r.positions.kl.length;
      ortMs += r.ortMs;
    });
    return { positions, ortMs };
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close({ type: 'close' })));
  }
}
