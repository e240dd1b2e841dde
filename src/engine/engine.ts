/** One call to get a runnable model: open + validate the checkpoint, pick the device, set up sessions and weights. */
import { resolveDevice, SessionPool, type Device, type ResolvedDevice } from '../graph/session.js';
import { ForwardEngine } from './forward.js';
import { openModel, type LoadedModel } from './model.js';
import { WeightStore } from './weights.js';

export interface EngineOptions {
  device?: Device;
  /** onnxruntime intra-op threads (default: all cores). */
  threads?: number;
  /** Keep all weights resident when the float32 model is at most this many bytes (default 2 GiB). */
  cacheBytes?: number;
  /**
   * GPTQ checkpoints: run eligible 4-bit linears on onnxruntime's MatMulNBits kernels (default true); false
   * dequantizes every packed weight to float32 on load.
   */
  int4Kernels?: boolean;
  /**
   * onnxruntime's CPU memory arena (default true). Off, buffers are freed after each run rather than kept per
   * session at their high-water mark — what quantize uses to stay within --max-memory.
   */
  memArena?: boolean;
}

export interface Engine {
  model: LoadedModel;
  forward: ForwardEngine;
  weights: WeightStore;
  pool: SessionPool;
  device: ResolvedDevice;
  /** One line saying which device was used and why. */
  deviceNote: string;
  close(): Promise<void>;
}

export async function createEngine(dir: string, options: EngineOptions = {}): Promise<Engine> {
  const model = openModel(dir);
  try {
    const { device, note } = await resolveDevice(options.device ?? 'cpu');
    const pool = new SessionPool(device, options.threads, options.memArena ?? true);
    const weights = new WeightStore(model.checkpoint, model.expected, options.cacheBytes, model.gptq, model.packed, options.int4Kernels ?? true);
    const forward = new ForwardEngine(model.spec, pool, weights);
    return {
      model,
      forward,
      weights,
      pool,
      device,
      deviceNote: note,
      async close() {
        await pool.release();
        model.checkpoint.close();
      },
    };
  } catch (e) {
    model.checkpoint.close();
    throw e;
  }
}
