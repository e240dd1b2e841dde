/**
 * onnxruntime-node sessions: execution-provider choice (cpu / cuda / webgpu / auto), a cache of sessions keyed by
 * graph shape, timing of time spent inside onnxruntime (for the benchmark's "share of wall time" number).
 *
 * CUDA needs the opt-in install (ONNXRUNTIME_NODE_INSTALL=cuda12); WebGPU is bundled but needs a Vulkan loader.
 * onnxruntime has no automatic fallback when a provider fails to load, so 'auto' probes with a tiny graph.
 */
import * as ort from 'onnxruntime-node';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fail } from '../errors.js';
import { GraphBuilder, OnnxType } from './builder.js';

export type Device = 'auto' | 'cpu' | 'cuda' | 'webgpu';
export const DEVICES: readonly Device[] = ['auto', 'cpu', 'cuda', 'webgpu'];

/** A provider that actually works here. */
export type ResolvedDevice = Exclude<Device, 'auto'>;

let loggingSet = false;
function quietOrt(): void {
  if (loggingSet) return;
  // onnxruntime prints provider load failures as [E:...] lines; we report them ourselves.
  ort.env.logLevel = 'fatal';
  loggingSet = true;
}

function providers(device: ResolvedDevice): string[] {
  return device === 'cpu' ? ['cpu'] : [device, 'cpu'];
}

export function sessionOptions(device: ResolvedDevice, threads?: number): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: providers(device),
    intraOpNumThreads: threads ?? Math.max(1, os.availableParallelism()),
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
    // The engine alternates between several sessions (attention, MoE, head), each with its own intra-op thread
    // pool. Workers that keep spinning after a run hold the cores while the next session starts (that halved
    // throughput on 2 cores: 754 → 373 ms for tiny-mixtral's 40×256 tokens), but never spinning makes every
    // parallel op wait for a sleeping thread to wake. So: spin during a run, stop as soon as it ends
    // (force_spinning_stop) — 3–12% faster on 2 threads than no spinning.
    extra: { session: { intra_op: { allow_spinning: '1' }, inter_op: { allow_spinning: '0' }, force_spinning_stop: '1' } },
  };
}

/**
 * WebGPU on Linux goes through Vulkan; without the loader Dawn prints a multi-line warning from native code, so we
 * look for libvulkan.so.1 first and skip the probe when it is absent.
 */
function hasVulkanLoader(): boolean {
  if (process.platform !== 'linux') return true;
  const dirs = [...(process.env['LD_LIBRARY_PATH'] ?? '').split(':'), '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/lib/x86_64-linux-gnu', '/usr/local/lib'];
  return dirs.some((d) => d && fs.existsSync(path.join(d, 'libvulkan.so.1')));
}

/** Try to create a session for a trivial graph on `device`; returns the error message or null. */
async function probe(device: ResolvedDevice): Promise<string | null> {
  if (device === 'webgpu' && !hasVulkanLoader()) return 'no Vulkan loader (libvulkan.so.1) found';
  const g = new GraphBuilder('probe');
  const x = g.input('x', OnnxType.FLOAT, [2, 2]);
  g.output('y', g.op('MatMul', [x, x]), OnnxType.FLOAT, [2, 2]);
  try {
    const s = await ort.InferenceSession.create(g.build(), { executionProviders: [device] });
    await s.run({ x: new ort.Tensor('float32', new Float32Array([1, 2, 3, 4]), [2, 2]) });
    await s.release();
    return null;
  } catch (e) {
    return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
  }
}

/** Resolve 'auto' (cuda → webgpu → cpu) or check an explicit GPU device; `note` says in one line what we got. */
export async function resolveDevice(device: Device): Promise<{ device: ResolvedDevice; note: string }> {
  quietOrt();
  if (device === 'cpu') return { device: 'cpu', note: 'device: cpu' };
  if (device === 'auto') {
    const tried: string[] = [];
    for (const d of ['cuda', 'webgpu'] as const) {
      const err = await probe(d);
      if (!err) return { device: d, note: `device: ${d} (auto)` };
      tried.push(`${d} unavailable`);
    }
    return { device: 'cpu', note: `device: cpu (auto; ${tried.join(', ')})` };
  }
  const err = await probe(device);
  if (err) {
    const hint =
      device === 'cuda'
        ? 'install the CUDA provider with `ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node` (CUDA 12 + cuDNN 9 on LD_LIBRARY_PATH)'
        : 'WebGPU needs a Vulkan loader (libvulkan.so.1) and a GPU driver';
    throw fail('DEVICE', `--device ${device} is not available: ${err}; ${hint}`);
  }
  return { device, note: `device: ${device}` };
}

/** Sessions cached by graph key, with a running total of time spent in `run`. */
export class SessionPool {
  private readonly sessions = new Map<string, Promise<ort.InferenceSession>>();
  private readonly keys = new Map<ort.InferenceSession, string>();
  /** Milliseconds and runs per graph key (for profiling). */
  readonly byKey = new Map<string, { ms: number; runs: number }>();
  /** Milliseconds spent inside onnxruntime's run(). */
  runMs = 0;
  runs = 0;

  constructor(
    readonly device: ResolvedDevice,
    readonly threads?: number,
  ) {
    quietOrt();
  }

  /** Get (or create from `build()`) the session for `key`. */
  get(key: string, build: () => Uint8Array): Promise<ort.InferenceSession> {
    let s = this.sessions.get(key);
    if (!s) {
      s = ort.InferenceSession.create(build(), sessionOptions(this.device, this.threads));
      s.then((session) => this.keys.set(session, key)).catch(() => undefined);
      this.sessions.set(key, s);
    }
    return s;
  }

  /** Run a session, timing it. */
  async run(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.ReturnType> {
    const t0 = performance.now();
    const out = await session.run(feeds);
    const ms = performance.now() - t0;
    this.runMs += ms;
    this.runs++;
    const key = this.keys.get(session) ?? '?';
    const k = this.byKey.get(key) ?? { ms: 0, runs: 0 };
    k.ms += ms;
    k.runs++;
    this.byKey.set(key, k);
    return out;
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}

/** Tensor constructors that never copy the data. */
export const tensor = {
  f32: (data: Float32Array, dims: number[]) => new ort.Tensor('float32', data, dims),
  i64: (data: BigInt64Array, dims: number[]) => new ort.Tensor('int64', data, dims),
  i64From: (values: ArrayLike<number>, dims: number[] = [values.length]) => {
    const a = new BigInt64Array(values.length);
    for (let i = 0; i < values.length; i++) a[i] = BigInt(values[i]!);
    return new ort.Tensor('int64', a, dims);
  },
};
