/**
 * Worker thread of SolvePool: its own onnxruntime sessions (CPU, `threads` intra-op threads), one task at a time.
 * Errors go back as messages (MoeQuantError keeps its code).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { errorReply } from '../worker-client.js';
import { SessionPool } from '../graph/session.js';
import { resultBuffers, runSolveTask } from './solve.js';
import type { SolveReply, SolveRequest, SolveWorkerInit } from './solve-pool.js';

const port = parentPort!;
const init = workerData as SolveWorkerInit;
const pool = new SessionPool('cpu', init.threads, false);

port.on('message', async (m: SolveRequest) => {
  if (m.type === 'close') {
    await pool.release();
    port.close();
    return;
  }
  const before = new Map([...pool.byKey].map(([k, v]) => [k, { ...v }]));
  try {
    const results = await runSolveTask(m.task, pool);
    const ort: Array<[string, number, number]> = [...pool.byKey].map(([k, v]) => [k, v.ms - (before.get(k)?.ms ?? 0), v.runs - (before.get(k)?.runs ?? 0)]);
    port.postMessage({ type: 'done', results, ort } satisfies SolveReply, resultBuffers(results));
  } catch (e) {
    port.postMessage(errorReply(e) satisfies SolveReply);
  }
});
