/**
 * Worker thread of ParallelNll: opens the model (and the reference, if any) once, then answers 'run' requests with
 * the NLL of its windows, 'compare' requests with comparePositions against the reference, and 'close' by releasing
 * the engines and exiting (after stopping a run in flight at its next layer-batch). Errors go back as messages (MoeQuantError keeps its code), so the
 * main thread reports them exactly as a single engine would.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { errorReply } from '../worker-client.js';
import { comparePositions } from './compare.js';
import { createEngine, type Engine } from './engine.js';
import type { NllWorkerInit, NllWorkerReply, NllWorkerRequest } from './parallel-nll.js';

const port = parentPort!;
const init = workerData as NllWorkerInit;

function reply(m: NllWorkerReply, transfer: ArrayBuffer[] = []): void {
  port.postMessage(m, transfer);
}

function replyError(e: unknown): void {
  reply(errorReply(e));
}

let engine: Engine | null = null;
let reference: Engine | null = null;
try {
  engine = await createEngine(init.model, init.engine);
  if (init.reference) reference = await createEngine(init.reference, init.engine);
  reply({ type: 'ready' });
} catch (e) {
  replyError(e);
}

let running = false;
let closing = false;

async function shutDown(): Promise<void> {
  await reference?.close();
  await engine?.close();
  port.close();
}

port.on('message', async (m: NllWorkerRequest) => {
  if (m.type === 'close') {
    // A run in flight (a sibling failed) stops at its next layer-batch and shuts down then: terminating the thread
    // while onnxruntime is inside a run aborts the whole process.
    closing = true;
    if (!running) await shutDown();
    return;
  }
  if (!engine) return replyError(new Error('the engine did not start'));
  running = true;
  const onProgress = (done: number) => {
    if (closing) throw new Error('stopped: the pool is closing');
    reply({ type: 'progress', done });
  };
  try {
    if (m.type === 'compare') {
      if (!reference) throw new Error('compare request to a worker started without a reference model');
      const ort0 = engine.pool.runMs + reference.pool.runMs;
      const positions = await comparePositions(reference, engine, m.windows, { batchTokens: m.batchTokens, hiddenBytes: m.hiddenBytes, onProgress });
      const ortMs = engine.pool.runMs + reference.pool.runMs - ort0;
      reply({ type: 'compared', positions, ortMs }, [positions.kl, positions.nllRef, positions.nll, positions.sameTop].map((a) => a.buffer as ArrayBuffer));
      return;
    }
    const ort0 = engine.pool.runMs;
    const { nll } = await engine.forward.run(m.windows, { head: 'nll', batchTokens: m.batchTokens, onProgress });
    reply({ type: 'result', nll: nll!, ortMs: engine.pool.runMs - ort0 }, [nll!.buffer as ArrayBuffer]);
  } catch (e) {
    replyError(e);
  } finally {
    running = false;
    if (closing) await shutDown();
  }
});
