import { afterAll, describe, expect, it } from 'vitest';
import { MoeQuantError } from '../../src/errors.js';
import { SessionPool } from '../../src/graph/session.js';
import { runSolveTask, type SolveSettings, type SolveTask } from '../../src/pipeline/solve.js';
import { runInOrder, SolvePool } from '../../src/pipeline/solve-pool.js';
import { correlatedX, gram, randn } from '../quantization/helpers.js';

const pool = new SessionPool('cpu');
const solvers = new SolvePool(2, 1, pool);
afterAll(async () => {
  await solvers.close();
  await pool.release();
});

const settings: SolveSettings = { bits: 4, groupSize: 32, sym: false, damp: 0.01, blockSize: 32, actOrder: true };

function task(seed: number, K = 160, errorH: 'solve' | 'other' = 'solve'): SolveTask {
  const H = gram(correlatedX(2 * K, K, 0.5, seed), 2 * K, K);
  const other = gram(correlatedX(2 * K, K, 0.2, seed + 1), 2 * K, K);
  return {
    H,
    errorH: errorH === 'solve' ? 'solve' : other,
    // Views into a larger buffer: the pool must send the views, not their buffers.
    modules: [48, 40].map((N, i) => ({ W: randn(N * K + 7, seed + 10 * i, 0.05).subarray(7), N, K })),
    settings,
  };
}

describe('runInOrder', () => {
  it('hands results on in task order with at most `limit` in flight', async () => {
    const delays = [30, 5, 20, 1, 10, 2];
    let inFlight = 0;
    let most = 0;
    const seen: number[] = [];
    await runInOrder(
      delays.map((d, i) => ({ d, i })),
      3,
      async ({ d, i }) => {
        most = Math.max(most, ++inFlight);
        await new Promise((r) => setTimeout(r, d));
        inFlight--;
        return i;
      },
      (r, t) => {
        expect(r).toBe(t.i);
        seen.push(r);
      },
    );
    expect(seen).toEqual([0, 1, 2, 3, 4, 5]);
    expect(most).toBe(3);
  });

  it('waits for the tasks in flight and throws the first error; nothing after it is handed on', async () => {
    let running = 0;
    const seen: number[] = [];
    const run = runInOrder([0, 1, 2, 3], 2, async (i) => {
      running++;
      await new Promise((r) => setTimeout(r, i === 1 ? 20 : 5));
      running--;
      if (i === 1) throw new Error('task 1 failed');
      return i;
    }, (r) => seen.push(r));
    await expect(run).rejects.toThrow('task 1 failed');
    expect(running).toBe(0);
    expect(seen).toEqual([0]);
  });
});

describe('SolvePool: solves in worker threads', () => {
  it('gives exactly the results of the same tasks solved in this thread, and counts their onnxruntime time here', async () => {
    const tasks = [task(1), task(2, 96, 'other'), task(3)];
    const before = pool.runs;
    const inline = await Promise.all(tasks.map((t) => runSolveTask(t, new SessionPool('cpu', 1))));
    const parallel = await Promise.all(tasks.map((t) => solvers.solve(t)));
    for (let i = 0; i < tasks.length; i++) {
      expect(parallel[i]!.length).toBe(2);
      for (let j = 0; j < 2; j++) {
        const a = inline[i]![j]!;
        const b = parallel[i]![j]!;
        expect(Buffer.from(b.q.q).equals(Buffer.from(a.q.q))).toBe(true);
        expect(Buffer.from(b.q.dequantized.buffer).equals(Buffer.from(a.q.dequantized.buffer))).toBe(true);
        expect(Array.from(b.q.scales)).toEqual(Array.from(a.q.scales));
        expect(Array.from(b.q.gIdx)).toEqual(Array.from(a.q.gIdx));
        expect(b.relError).toBe(a.relError);
        expect(b.relError).toBeGreaterThan(0);
        expect(b.relError).toBeLessThan(0.5);
      }
    }
    expect(pool.runs).toBeGreaterThan(before);
    // The caller's arrays are copied, not moved.
    expect(tasks[0]!.modules[0]!.W.length).toBe(48 * 160);
  });

  it("passes a solve's error back with its code", async () => {
    const t = task(4);
    t.H = t.H!.slice();
    t.H[5] = NaN;
    const err = await solvers.solve(t).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MoeQuantError);
    expect((err as MoeQuantError).code).toBe('NUMERIC');
    expect((err as Error).message).toMatch(/Hessian/);
    // The worker is free again afterwards.
    expect((await solvers.solve(task(5)))[0]!.relError).toBeGreaterThan(0);
  });
});
