/**
 * onnxruntime-node sessions: execution-provider choice (cpu / cuda / webgpu / auto), a cache of sessions keyed by
 * graph shape, timing of time spent inside onnxruntime (for the benchmark's "share of wall time" number).
 *
 * CUDA needs the opt-in install (ONNXRUNTIME_NODE_INSTALL=cuda12); WebGPU is bundled but needs a Vulkan loader and
 * a driver. onnxruntime has no automatic fallback when a provider fails to load, so devices are probed with a tiny
 * graph (WebGPU in a child process, see webgpu-probe.ts).
 */
import * as ort from 'onnxruntime-node';
import os from 'node:os';
import { fail } from '../errors.js';
import { GraphBuilder, OnnxType } from './builder.js';
import { hideSoftwareDrivers, isSoftwareDevice, probeWebGpu, type WebGpuProbe } from './webgpu-probe.js';

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

export function sessionOptions(device: ResolvedDevice, threads?: number, memArena = true): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: providers(device),
    intraOpNumThreads: threads ?? Math.max(1, os.availableParallelism()),
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    // false: CPU buffers go back to the system after each run instead of staying in every session's arena at its
    // high-water mark (quantize: see README "Real sizes"; no measured slowdown there).
    ...(memArena ? {} : { enableCpuMemArena: false }),
    logSeverityLevel: 3,
    // The engine alternates between several sessions (attention, MoE, head), each with its own intra-op thread
    // pool. Workers that keep spinning after a run hold the cores while the next session starts (that halved
    // throughput on 2 cores: 754 → 373 ms for tiny-mixtral's 40×256 tokens), but never spinning makes every
    // parallel op wait for a sleeping thread to wake. So: spin during a run, stop as soon as it ends
    // (force_spinning_stop) — 3–12% faster on 2 threads than no spinning.
    extra: { session: { intra_op: { allow_spinning: '1' }, inter_op: { allow_spinning: '0' }, force_spinning_stop: '1' } },
  };
}

function probeModel(): Uint8Array {
  const g = new GraphBuilder('probe');
  const x = g.input('x', OnnxType.FLOAT, [2, 2]);
  g.output('y', g.op('MatMul', [x, x]), OnnxType.FLOAT, [2, 2]);
  return g.build();
}

/** Try to create and run a session for a trivial graph on CUDA (in this process); returns the error message or null. */
async function probeCuda(): Promise<string | null> {
  try {
    const s = await ort.InferenceSession.create(probeModel(), { executionProviders: ['cuda'] });
    await s.run({ x: new ort.Tensor('float32', new Float32Array([1, 2, 3, 4]), [2, 2]) });
    await s.release();
    return null;
  } catch (e) {
    return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
  }
}

// Probes run once per process: each costs a provider start-up (WebGPU: a child process).
let cudaProbe: Promise<string | null> | undefined;
const webgpuProbes = new Map<boolean, Promise<WebGpuProbe>>();
const webgpu = (hideSoftware: boolean) => {
  let p = webgpuProbes.get(hideSoftware);
  if (!p) webgpuProbes.set(hideSoftware, (p = probeWebGpu(probeModel(), hideSoftware)));
  return p;
};

/** What resolveDevice found. */
export interface DeviceChoice {
  device: ResolvedDevice;
  /** One line saying which device is used and why. */
  note: string;
  /** WebGPU: the adapter's name (the Vulkan loader's first device), when known. */
  adapter: string | null;
  /** WebGPU on a software rasterizer (lavapipe, SwiftShader): slower than the CPU provider. */
  software: boolean;
}

/** A hardware WebGPU adapter: keep this process's Dawn off the software drivers the probe hid, like the probe. */
function useHardwareWebGpu(p: WebGpuProbe, how: string): DeviceChoice {
  if (p.hiddenDrivers.length) process.env['VK_LOADER_DRIVERS_DISABLE'] = hideSoftwareDrivers(process.env['VK_LOADER_DRIVERS_DISABLE']);
  const parts = [how, p.adapter ? `adapter ${p.adapter}` : ''].filter(Boolean);
  return { device: 'webgpu', note: `device: webgpu${parts.length ? ` (${parts.join('; ')})` : ''}`, adapter: p.adapter, software: false };
}

/**
 * Resolve 'auto' (cuda → webgpu on a GPU → cpu; never a software WebGPU adapter) or check an explicit GPU device.
 * An explicit 'webgpu' takes a software adapter when there is nothing else (the note says so).
 */
export async function resolveDevice(device: Device): Promise<DeviceChoice> {
  quietOrt();
  const none = { adapter: null, software: false };
  if (device === 'cpu') return { device: 'cpu', note: 'device: cpu', ...none };
  if (device === 'auto') {
    if (!(await (cudaProbe ??= probeCuda()))) return { device: 'cuda', note: 'device: cuda (auto)', ...none };
    const p = await webgpu(true);
    if (p.ok && !p.software) return useHardwareWebGpu(p, 'auto');
    const why = p.ok ? `only a software adapter (${p.adapter})` : p.problem;
    return { device: 'cpu', note: `device: cpu (auto; cuda unavailable, webgpu: ${why})`, ...none };
  }
  if (device === 'cuda') {
    const err = await (cudaProbe ??= probeCuda());
    if (err)
      throw fail(
        'DEVICE',
        `--device cuda is not available: ${err}; install the CUDA provider with \`ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node\` (CUDA 12 + cuDNN 9 on LD_LIBRARY_PATH)`,
      );
    return { device: 'cuda', note: 'device: cuda', ...none };
  }
  let p = await webgpu(true);
  if (p.ok && !p.software) return useHardwareWebGpu(p, '');
  if (!p.ok && p.hiddenDrivers.length) p = await webgpu(false);
  if (!p.ok) throw fail('DEVICE', `--device webgpu is not available: ${p.problem}; ${webgpuHint(p)}`);
  return {
    device: 'webgpu',
    note: `device: webgpu (software adapter ${p.adapter ?? '?'}: a CPU emulating a GPU, expect it to be slower than --device cpu)`,
    adapter: p.adapter,
    software: true,
  };
}

function webgpuHint(p: WebGpuProbe): string {
  if (/no Vulkan loader/.test(p.problem ?? '')) return "install the Vulkan loader (Debian/Ubuntu: libvulkan1) and your GPU's Vulkan driver";
  if (p.devices.length && !p.devices.every(isSoftwareDevice)) return 'a newer GPU driver may help; --device cpu works meanwhile';
  if (p.devices.length) return "WebGPU needs a GPU's Vulkan driver; use --device cpu";
  return "install your GPU's Vulkan driver (NVIDIA: the proprietary driver; AMD/Intel: Mesa's mesa-vulkan-drivers)";
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
    /** onnxruntime's per-session CPU memory arena (see sessionOptions). */
    readonly memArena = true,
  ) {
    quietOrt();
  }

  /** Get (or create from `build()`) the session for `key`. */
  get(key: string, build: () => Uint8Array): Promise<ort.InferenceSession> {
    let s = this.sessions.get(key);
    if (!s) {
      s = ort.InferenceSession.create(build(), sessionOptions(this.device, this.threads, this.memArena));
      s.then((session) => this.keys.set(session, key)).catch(() => undefined);
      this.sessions.set(key, s);
    }
    return s;
  }

  /**
   * Run a session, timing it. `outputs`: tensors onnxruntime writes the named outputs into (views allowed) instead of
   * allocating them and copying the results out; an output may alias an input when the op reads that input before
   * writing (Gemm's C: accumulate in place).
   */
  async run(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>, outputs?: Record<string, ort.Tensor>): Promise<ort.InferenceSession.ReturnType> {
    const t0 = performance.now();
    const out = outputs ? await session.run(feeds, outputs) : await session.run(feeds);
    this.record(this.keys.get(session) ?? '?', performance.now() - t0, 1);
    return out;
  }

  /** Count time spent in onnxruntime (here, or in a worker's pool on this pool's behalf). */
  record(key: string, ms: number, runs: number): void {
    this.runMs += ms;
    this.runs += runs;
    const k = this.byKey.get(key) ?? { ms: 0, runs: 0 };
    k.ms += ms;
    k.runs += runs;
    this.byKey.set(key, k);
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
