/**
 * Solves in parallel worker threads. onnxruntime-node runs a session synchronously on the calling thread, so in one
 * thread the GPTQ column loop (JavaScript) and the solve's small Gemms (onnxruntime) take turns and one core idles
 * much of the time; a worker per core, each with one intra-op thread, keeps both busy. Tasks are independent
 * (solve.ts), so results are the same as solving them one after another in the main thread.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { SessionPool } from '../graph/session.js';
import { WorkerClient, type ErrorReply } from '../worker-client.js';
import type { SolvedModule, SolveTask } from './solve.js';

export interface SolveWorkerInit {
  /** onnxruntime intra-op threads of the worker. */
  threads: number;
}

export type SolveRequest = { type: 'solve'; task: SolveTask } | { type: 'close' };

export type SolveReply =
  /** `ort`: [graph key, milliseconds, runs] the task spent in onnxruntime. */
  | { type: 'done'; results: SolvedModule[]; ort: Array<[string, number, number]> }
  | ErrorReply;

/** The worker entry, built to dist/ (under vitest this module runs from src/*.ts; `npm test` builds first). */
function workerScript(): string {
  const here = fileURLToPath(import.meta.url);
  const file = here.endsWith('.ts') ? path.resolve(path.dirname(here), '../../dist/pipeline/solve-worker.js') : path.join(path.dirname(here), 'solve-worker.js');
  if (!fs.existsSync(file)) throw new Error(`parallel solves need the build (${file} is missing): run npm run build`);
  return file;
}

/** The copies a worker gets: a view would send its whole buffer. */
function sendable(task: SolveTask): SolveTask {
  const own = (a: Float32Array): Float32Array => (a.byteLength !== a.buffer.byteLength ? a.slice() : a);
  return {
    ...task,
    // (A factorization's U lies on a SharedArrayBuffer: sent, it is shared, not copied.)
    H: task.H instanceof Float32Array ? own(task.H) : task.H,
    errorH: task.errorH instanceof Float32Array ? own(task.errorH) : task.errorH,
    modules: task.modules.map((m) => ({ ...m, W: own(m.W) })),
  };
}

type SolveWorker = WorkerClient<SolveRequest, SolveReply>;

/** `size` workers, started on first use; a task goes to the first free one. */
export class SolvePool {
  private workers: SolveWorker[] | null = null;
  private readonly free: SolveWorker[] = [];
  private readonly waiting: Array<(w: SolveWorker) => void> = [];

  /** `timings`: the pool that counts the workers' onnxruntime time (profiling, the benchmark's share of wall time). */
  constructor(
    readonly size: number,
    private readonly threadsPerWorker: number,
    private readonly timings?: SessionPool,
  ) {}

  private start(): void {
    const script = workerScript();
    const init: SolveWorkerInit = { threads: this.threadsPerWorker };
    this.workers = Array.from({ length: this.size }, (): SolveWorker => new WorkerClient(new Worker(script, { workerData: init }), 'solve worker'));
    this.free.push(...this.workers);
  }

  async solve(task: SolveTask): Promise<SolvedModule[]> {
    if (!this.workers) this.start();
    const w = this.free.pop() ?? (await new Promise<SolveWorker>((resolve) => this.waiting.push(resolve)));
    try {
      // The task's arrays are copied: the caller keeps its weights and Hessians.
      const reply = await w.next({ type: 'solve', task: sendable(task) });
      if (reply.type !== 'done') throw new Error(`solve worker: unexpected reply ${reply.type}`);
      for (const [key, ms, runs] of reply.ort) if (runs > 0) this.timings?.record(key, ms, runs);
      return reply.results;
    } finally {
      const next = this.waiting.shift();
      if (next) next(w);
      else this.free.push(w);
    }
  }

  async close(): Promise<void> {
    if (this.workers) await Promise.all(this.workers.map((w) => w.close({ type: 'close' })));
    this.workers = null;
    this.free.length = 0;
  }
}

/**
 * Run `tasks` with at most `limit` in flight and hand each result to `emit` in task order, as soon as every earlier
 * task's result has been handed on. On a failure, waits for the tasks in flight and throws the first error.
 */
export async function runInOrder<T, R>(tasks: T[], limit: number, run: (t: T) => Promise<R>, emit: (r: R, t: T) => void): Promise<void> {
  const results = new Map<number, R>();
  let next = 0;
  let emitted = 0;
  let error: unknown = null;
  const lane = async (): Promise<void> => {
    while (next < tasks.length && error === null) {
      const i = next++;
      try {
        results.set(i, await run(tasks[i]!));
        for (; results.has(emitted) && error === null; emitted++) {
          const r = results.get(emitted)!;
          results.delete(emitted);
          emit(r, tasks[emitted]!);
        }
      } catch (e) {
        error ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, tasks.length)) }, lane));
  if (error !== null) throw error;
}
