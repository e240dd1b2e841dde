/**
 * `moe-quant doctor`: which execution provider --device picks on this machine, its adapter, and whether it computes
 * what the CPU provider computes — the perplexity of one window of the bundled text on both.
 */
import { resolveDevice, type Device } from '../graph/session.js';
import { versions } from '../version.js';
import { evaluatePerplexity } from './perplexity.js';

/** Largest relative perplexity difference to the CPU provider that `doctor` accepts (fp32 on both). */
export const DEVICE_CHECK_TOLERANCE = 1e-4;

export interface DeviceCheckOptions {
  device: Device;
  model: string;
  data: string;
  seqLen: number;
}

export interface DeviceCheck {
  requested: Device;
  device: string;
  /** The one-line device note every command prints. */
  note: string;
  /** WebGPU: adapter name (the Vulkan loader's first device), when it can be found. */
  adapter: string | null;
  /** WebGPU on a software rasterizer (slower than the CPU provider). */
  software: boolean;
  onnxruntime: string;
  model: string;
  seq_len: number;
  /** Perplexity of the first window on the chosen device and on the CPU provider (equal when the device is cpu). */
  ppl: { device: number; cpu: number };
  /** |ppl_device − ppl_cpu| / ppl_cpu; null when the device is the CPU provider. */
  rel_diff: number | null;
  seconds: { device: number; cpu: number };
  /** rel_diff within DEVICE_CHECK_TOLERANCE (or the device is cpu). */
  ok: boolean;
}

export async function checkDevice(opts: DeviceCheckOptions): Promise<DeviceCheck> {
  const choice = await resolveDevice(opts.device);
  const evalOn = (device: Device) => evaluatePerplexity({ model: opts.model, data: opts.data, seqLen: opts.seqLen, maxWindows: 1, workers: 1, device });
  const cpu = await evalOn('cpu');
  const dev = choice.device === 'cpu' ? cpu : await evalOn(choice.device);
  const relDiff = choice.device === 'cpu' ? null : Math.abs(dev.ppl - cpu.ppl) / cpu.ppl;
  return {
    requested: opts.device,
    device: choice.device,
    note: choice.note,
    adapter: choice.adapter,
    software: choice.software,
    onnxruntime: versions()['onnxruntime-node']!,
    model: cpu.model,
    seq_len: opts.seqLen,
    ppl: { device: dev.ppl, cpu: cpu.ppl },
    rel_diff: relDiff,
    seconds: { device: dev.seconds, cpu: cpu.seconds },
    ok: relDiff === null || relDiff <= DEVICE_CHECK_TOLERANCE,
  };
}
