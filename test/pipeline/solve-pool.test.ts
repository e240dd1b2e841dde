import { afterAll, describe, expect, it } from 'vitest';
import { MoeQuantError } from '../../src/errors.js';
import { SessionPool } from '../../src/graph/session.js';
import { joinRows, rowRanges, runSolveTask, solveRowRanges, type SolveSettings, type SolveTask } from '../../src/pipeline/solve.js';
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
    const H = (t.H as Float32Array).slice();
    H[5] = NaN;
    t.H = H;
    const err = await solvers.solve(t).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MoeQuantError);
    expect((err as MoeQuantError).code).toBe('NUMERIC');
    expect((err as Error).message).toMatch(/Hessian/);
    // The worker is free again afterwards.
    expect((await solvers.solve(task(5)))[0]!.relError).toBeGreaterThan(0);
  });
});

describe('solveRowRanges', () => {
  // K above linalg's JavaScript limit (256): U from the blocked onnxruntime factorization (float32); below: float64.
  const one = (N: number, K: number, s: SolveSettings, errorH: 'solve' | 'other', seed: number): SolveTask => {
    const H = gram(correlatedX(2 * K, K, 0.5, seed), 2 * K, K);
    const other = gram(correlatedX(2 * K, K, 0.2, seed + 1), 2 * K, K);
    return { H, errorH: errorH === 'solve' ? 'solve' : other, modules: [{ W: randn(N * K, seed + 3, 0.05), N, K }], settings: s };
  };
  const cases: Array<[string, number, number, SolveSettings, 'solve' | 'other']> = [
    ['act-order, static groups', 300, 320, settings, 'solve'],
    ['natural order, a group size that does not divide K, rel_error on another Hessian', 260, 300, { ...settings, actOrder: false, groupSize: 128 }, 'other'],
    ['one group per row, 8 bits', 140, 288, { ...settings, groupSize: -1, bits: 8, actOrder: false }, 'solve'],
    ['K = 128: U in float64', 200, 128, settings, 'solve'],
  ];
  for (const [name, N, K, s, errorH] of cases) {
    it(`joins the workers' row ranges into the very solve of the whole module (${name})`, async () => {
      const t = one(N, K, s, errorH, N + K);
      const [whole] = await runSolveTask(t, pool);
      const split = await solveRowRanges(t, pool, solvers);
      expect(split.q.N).toBe(N);
      for (const f of ['q', 'scales', 'zeros', 'gIdx', 'dequantized'] as const) expect(Buffer.from(split.q[f].buffer).equals(Buffer.from(whole!.q[f].buffer))).toBe(true);
      // rel_error from the ranges' error sums (cut at multiples of 128 rows): the same number.
      expect(split.relError).toBeGreaterThan(0);
      expect(split.relError).toBe(whole!.relError);
    });
  }

  it('cuts rows into near-equal ranges and joins them back', () => {
    expect(rowRanges(10, 3)).toEqual([[0, 3], [3, 6], [6, 10]]);
    expect(rowRanges(2, 4)).toEqual([[0, 1], [1, 2]]);
    expect(rowRanges(300, 2, 128)).toEqual([[0, 128], [128, 300]]);
    expect(rowRanges(2048, 2, 128)).toEqual([[0, 1024], [1024, 2048]]);
    expect(rowRanges(100, 2, 128)).toEqual([[0, 100]]);
    const part = (rows: number[]) => ({ N: rows.length, K: 2, bits: 4, groupSize: 2, sym: false, q: Uint8Array.from(rows.flatMap((r) => [r, r])), scales: Float32Array.from(rows), zeros: Uint8Array.from(rows), gIdx: Int32Array.from([0, 0]), dequantized: Float32Array.from(rows.flatMap((r) => [r, -r])) });
    const j = joinRows([part([1, 2]), part([3])], 3);
    expect(j.N).toBe(3);
    expect([...j.q]).toEqual([1, 1, 2, 2, 3, 3]);
    expect([...j.scales]).toEqual([1, 2, 3]);
    expect([...j.dequantized]).toEqual([1, -1, 2, -2, 3, -3]);
  });
});
