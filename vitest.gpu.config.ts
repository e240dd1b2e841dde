import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { defineConfig } from 'vitest/config';
import { readSoftwareVulkan, SOFTWARE_VULKAN_DIR, vulkanEnv } from './test/gpu/software-vulkan.js';

// GPU tests (npm run test:gpu): the engine on WebGPU (and CUDA when installed) against the references and the CPU
// provider, and device probing. With a software Vulkan in .gl/software-vulkan (scripts/software-vulkan.sh) this
// process and its workers use it — and only they: the other test commands never see that adapter.
// MOE_QUANT_SOFTWARE_VULKAN=0 leaves the machine's own Vulkan drivers in place (to test a real GPU).
const vk = process.env['MOE_QUANT_SOFTWARE_VULKAN'] === '0' ? null : readSoftwareVulkan();
if (vk) {
  Object.assign(process.env, vulkanEnv(vk));
  // Mesa warns when XDG_RUNTIME_DIR is unset.
  if (!process.env['XDG_RUNTIME_DIR']) {
    const dir = path.join(os.tmpdir(), `moe-quant-xdg-${process.getuid?.() ?? 'user'}`);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    process.env['XDG_RUNTIME_DIR'] = dir;
  }
  process.stderr.write(`GPU tests: software Vulkan (Mesa ${vk.mesa} lavapipe) from ${path.relative(process.cwd(), SOFTWARE_VULKAN_DIR)}\n`);
} else {
  process.stderr.write('GPU tests: this machine\'s own GPU drivers (no software Vulkan: scripts/software-vulkan.sh installs one)\n');
}

export default defineConfig({
  test: {
    include: ['test/gpu/**/*.gpu.test.ts'],
    testTimeout: 300_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
