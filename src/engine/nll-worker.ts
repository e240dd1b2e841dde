/**
 * Worker thread of ParallelNll: opens the model once, then answers 'run' requests with the NLL of its windows and
 * 'close' by releasing the engine and exiting (after stopping a run in flight at its next layer-batch). Errors go back as messages (MoeQuantError keeps its code), so the
 * main thread reports them exactly as a single engine would.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { MoeQuantError } from '../errors.js';
import { createEngine, type Engine } from './engine.js';
import type { NllWorkerInit, NllWorkerReply, NllWorkerRequest } from './parallel-nll.js';

const port = parentPort!;
const init = workerData as NllWorkerInit;

function reply(m: NllWorkerReply, transfer: ArrayBuffer[] = []): void {
  port.postMessage(m, transfer);
}

function replyError(e: unknown): void {
  if (e instanceof MoeQuantError) reply({ type: 'error', code: e.code, message: e.message });
  else if (e instanceof Error) reply({ type: 'error', code: null, message: e.message, stack: e.stack });
  else reply({ type: 'error', code: null, message: String(e) });
}

let engine: Engine | null = null;
try {
  engine = await createEngine(init.model, init.engine);
  reply({ type: 'ready' });
} catch (e) {
  replyError(e);
}

let running = false;
let closing = false;

async function shutDown(): Promise<void> {
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
  try {
    const ort0 = engine.pool.runMs;
    const { nll } = await engine.forward.run(m.windows, {
      head: 'nll',
      batchTokens: m.batchTokens,
      onProgress: (done) => {
        if (closing) throw new Error('stopped: the pool is closing');
        reply({ type: 'progress', done });
      },
    });
    reply({ type: 'result', nll: nll!, ortMs: engine.pool.runMs - ort0 }, [nll!.buffer as ArrayBuffer]);
  } catch (e) {
    replyError(e);
  } finally {
    running = false;
    if (closing) await shutDown();
  }
});
