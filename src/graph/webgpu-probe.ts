/**
 * Which WebGPU adapter onnxruntime would get here, found in a child process: Dawn and the Vulkan driver print their
 * warnings from native code straight to stderr, which only a separate process can capture. The child runs a 2×2
 * MatMul on the webgpu provider with the Vulkan loader's driver log on (VK_LOADER_DEBUG=driver), which names the
 * devices the loader found; Dawn's own warnings say why it rejected one.
 *
 * Software rasterizers (Mesa's lavapipe, SwiftShader) are several times slower than the CPU provider, so `auto`
 * probes with their drivers hidden (VK_LOADER_DRIVERS_DISABLE): it never lands on one, and an explicit
 * `--device webgpu` only does when nothing else works.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

/** VK_LOADER_DRIVERS_DISABLE patterns (ICD manifest file names) of software Vulkan drivers. */
export const SOFTWARE_DRIVER_PATTERNS = ['*lvp*', '*swiftshader*'];
/** Device names of software Vulkan implementations. */
const SOFTWARE_DEVICE = /llvmpipe|lavapipe|swiftshader|softpipe/i;

export interface WebGpuProbe {
  /** The provider ran the probe graph. */
  ok: boolean;
  /** What was found, as a phrase for "--device webgpu is not available: …" (when !ok). */
  problem: string | null;
  /** Vulkan devices the loader listed, in its order of preference (Linux; empty elsewhere). */
  devices: string[];
  /** ICD manifests hidden because they are software drivers. */
  hiddenDrivers: string[];
  /** The adapter the provider used (the loader's first device), when known. */
  adapter: string | null;
  /** The adapter is a software rasterizer. */
  software: boolean;
}

/** Whether a Vulkan device name is a software implementation. */
export function isSoftwareDevice(name: string): boolean {
  return SOFTWARE_DEVICE.test(name);
}

/** VK_LOADER_DRIVERS_DISABLE that also hides the software drivers. */
export function hideSoftwareDrivers(current: string | undefined): string {
  const have = (current ?? '').split(',').filter(Boolean);
  return [...have, ...SOFTWARE_DRIVER_PATTERNS.filter((p) => !have.includes(p))].join(',');
}

/** Interpret the child's result line and its stderr (loader log and Dawn warnings). */
export function parseProbe(result: { ok: boolean; error?: string }, stderr: string): WebGpuProbe {
  // Dawn and the loader write to the same stderr unsynchronised: a Dawn warning can start mid-line.
  const lines = stderr.replace(/(?<!^|\n)Warning: /g, '\nWarning: ').split('\n');
  const devices: string[] = [];
  const hiddenDrivers: string[] = [];
  const rejections: string[] = [];
  let sorted = false; // inside the loader's "Sorted order:" device list
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const dev = /DRIVER:\s+\[\d+\]\s+(.*?)\s*$/.exec(line);
    if (dev && sorted && !devices.includes(dev[1]!)) devices.push(dev[1]!);
    if (!dev) sorted = /Sorted order:/.test(line);
    const hidden = /Driver "([^"]+)" ignored because it was disabled/.exec(line);
    if (hidden && !hiddenDrivers.includes(hidden[1]!)) hiddenDrivers.push(hidden[1]!);
    // Dawn: "Warning: <why>" then " - While initializing adapter (backend=…)".
    const warn = /^Warning: (.*)$/.exec(line);
    const why = warn ? warn[1]!.replace(/\.$/, '') : null;
    if (why && /While initializing adapter/.test(lines[i + 1] ?? '') && !rejections.includes(why)) rejections.push(why);
  }
  const loaderMissing = /Couldn't load Vulkan/.test(stderr);
  const adapter = result.ok ? (devices[0] ?? null) : null;
  return {
    ok: result.ok,
    problem: result.ok ? null : describeProblem(result.error ?? 'unknown error', devices, hiddenDrivers, rejections, loaderMissing),
    devices,
    hiddenDrivers,
    adapter,
    software: adapter !== null && isSoftwareDevice(adapter),
  };
}

function describeProblem(error: string, devices: string[], hidden: string[], rejections: string[], loaderMissing: boolean): string {
  if (loaderMissing) return 'no Vulkan loader (libvulkan.so.1) found';
  const why = rejections.length ? ` (${rejections.join('; ')})` : '';
  if (devices.length) {
    const soft = devices.every(isSoftwareDevice);
    return `${soft ? 'only a software Vulkan driver' : 'Vulkan device(s)'} (${devices.join(', ')}) that WebGPU rejects${why}`;
  }
  if (hidden.length) return `only a software Vulkan driver (${hidden.join(', ')}), which is slower than the CPU provider`;
  if (!/No supported adapters/.test(error)) return error;
  return 'a Vulkan loader but no Vulkan device (no GPU driver for Vulkan)';
}

/**
 * WebGPU on Linux goes through Vulkan; when the loader is not in the usual places, skip spawning a probe (the child
 * would only find out the same, later).
 */
export function hasVulkanLoader(): boolean {
  if (process.platform !== 'linux') return true;
  const dirs = [...(process.env['LD_LIBRARY_PATH'] ?? '').split(':'), '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/lib/x86_64-linux-gnu', '/usr/local/lib'];
  return dirs.some((d) => d && fs.existsSync(path.join(d, 'libvulkan.so.1')));
}

/** The child: load onnxruntime-node, run the model (argv[2], base64) on webgpu, print {"ok"} or {"ok": false, "error"}. */
const CHILD = `
const ort = require(process.argv[1]);
ort.env.logLevel = 'fatal';
(async () => {
  try {
    const s = await ort.InferenceSession.create(Buffer.from(process.argv[2], 'base64'), { executionProviders: ['webgpu'], logSeverityLevel: 4 });
    await s.run({ x: new ort.Tensor('float32', new Float32Array([1, 2, 3, 4]), [2, 2]) });
    await s.release();
    process.stdout.write(JSON.stringify({ ok: true }));
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.message || e).split('\\n')[0] }));
  }
})();
`;

/** Run the probe model (input x [2, 2] float) on webgpu in a child process; hideSoftware hides software drivers. */
export function probeWebGpu(model: Uint8Array, hideSoftware: boolean): Promise<WebGpuProbe> {
  if (!hasVulkanLoader()) return Promise.resolve({ ok: false, problem: 'no Vulkan loader (libvulkan.so.1) found', devices: [], hiddenDrivers: [], adapter: null, software: false });
  const env: NodeJS.ProcessEnv = { ...process.env, VK_LOADER_DEBUG: 'driver' };
  if (hideSoftware) env['VK_LOADER_DRIVERS_DISABLE'] = hideSoftwareDrivers(process.env['VK_LOADER_DRIVERS_DISABLE']);
  const ortEntry = createRequire(import.meta.url).resolve('onnxruntime-node');
  const args = ['-e', CHILD, ortEntry, Buffer.from(model).toString('base64')];
  return new Promise((resolve) => {
    execFile(process.execPath, args, { env, timeout: 120_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      let result: { ok: boolean; error?: string };
      try {
        result = JSON.parse(stdout) as { ok: boolean; error?: string };
      } catch {
        // The child died in native code (or timed out) before printing its result.
        const last = stderr.trim().split('\n').filter((l) => !/^\s*(DEBUG|INFO|WARNING|DRIVER|ERROR|LAYER)\b/.test(l)).pop();
        result = { ok: false, error: `the probe process failed (${err ? (err.signal ?? `exit ${err.code}`) : 'no result'}${last ? `: ${last.trim()}` : ''})` };
      }
      resolve(parseProbe(result, stderr));
    });
  });
}
