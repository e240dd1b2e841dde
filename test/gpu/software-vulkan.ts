/**
 * The software Vulkan that scripts/software-vulkan.sh unpacks into .gl/software-vulkan (not a test file): Mesa 25
 * lavapipe, which onnxruntime's WebGPU accepts, and Debian 12's Mesa 22.3 lavapipe, which it rejects. Only the GPU
 * test process sees them (vitest.gpu.config.ts sets the variables before it starts its workers).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const SOFTWARE_VULKAN_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../.gl/software-vulkan');

export interface SoftwareVulkan {
  /** mesa-vulkan-drivers version of the accepted lavapipe. */
  mesa: string;
  env: Record<string, string>;
  rejected: { mesa: string; env: Record<string, string> };
}

export function readSoftwareVulkan(): SoftwareVulkan | null {
  const file = path.join(SOFTWARE_VULKAN_DIR, 'env.json');
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as SoftwareVulkan) : null;
}

/**
 * CI sets MOE_QUANT_EXPECT_WEBGPU=1 after installing the software Vulkan: WebGPU tests then fail instead of skipping
 * when WebGPU is unavailable.
 */
export const EXPECT_WEBGPU = process.env['MOE_QUANT_EXPECT_WEBGPU'] === '1';

/** The environment of a process that sees `vk` (LD_LIBRARY_PATH prepended to the current one). */
export function vulkanEnv(vk: { env: Record<string, string> }, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const ld = [vk.env['LD_LIBRARY_PATH'], base['LD_LIBRARY_PATH']].filter(Boolean).join(':');
  return { ...base, ...vk.env, LD_LIBRARY_PATH: ld };
}
