/**
 * Reading the WebGPU probe's stderr (Vulkan loader driver log + Dawn warnings). The samples are trimmed copies of
 * what onnxruntime-node 1.30 printed with Mesa 25 / Debian 12 lavapipe; the real runs are in test/gpu.
 */
import { describe, expect, it } from 'vitest';
import { hideSoftwareDrivers, isSoftwareDevice, parseProbe } from '../../src/graph/webgpu-probe.js';

const NO_ADAPTER = { ok: false, error: 'adapter_result.status == wgpu::RequestAdapterStatus::Success was false. Failed to get a WebGPU adapter: No supported adapters' };
/** The loader's device lists: enumeration order (here reversed) and its sorted order (= `names`). */
const devices = (...names: string[]) =>
  [
    'INFO | DRIVER:    linux_read_sorted_physical_devices:',
    'INFO | DRIVER:         Original order:',
    ...[...names].reverse().map((n, i) => `INFO | DRIVER:               [${i}] ${n}`),
    'INFO | DRIVER:         Sorted order:',
    ...names.map((n, i) => `INFO | DRIVER:               [${i}] ${n}  `),
  ].join('\n');

describe('parseProbe', () => {
  it('an accepted software adapter: named, flagged as software', () => {
    const p = parseProbe({ ok: true }, `${devices('llvmpipe (LLVM 15.0.6, 256 bits)')}\nWarning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16\n`);
    expect(p).toMatchObject({ ok: true, problem: null, adapter: 'llvmpipe (LLVM 15.0.6, 256 bits)', software: true });
  });

  it('a GPU and lavapipe: the loader\'s first (sorted) device is the adapter, not software', () => {
    const p = parseProbe({ ok: true }, devices('NVIDIA GeForce RTX 4090', 'llvmpipe (LLVM 15.0.6, 256 bits)'));
    expect(p.devices).toEqual(['NVIDIA GeForce RTX 4090', 'llvmpipe (LLVM 15.0.6, 256 bits)']);
    expect(p).toMatchObject({ adapter: 'NVIDIA GeForce RTX 4090', software: false });
  });

  it('software drivers hidden and nothing else: says only a software driver was there', () => {
    const stderr = [
      "WARNING | DRIVER: Driver \"lvp_icd.x86_64.json\" ignored because it was disabled by env var 'VK_LOADER_DRIVERS_DISABLE'",
      'ERROR | DRIVER:   vkCreateInstance: Found no drivers!',
      'Warning: vkCreateInstance failed with VK_ERROR_INCOMPATIBLE_DRIVER',
      '    at CheckVkSuccessImpl (/build/Release/_deps/dawn-src/src/dawn/native/vulkan/VulkanError.cpp:106)',
    ].join('\n');
    const p = parseProbe(NO_ADAPTER, stderr);
    expect(p.hiddenDrivers).toEqual(['lvp_icd.x86_64.json']);
    expect(p.problem).toBe('only a software Vulkan driver (lvp_icd.x86_64.json), which is slower than the CPU provider');
  });

  it("Debian 12's lavapipe rejected by Dawn: names the device and Dawn's reason, even when the warning starts mid-line", () => {
    const stderr = `${devices('llvmpipe (LLVM 15.0.6, 256 bits)')}Warning: Vulkan shaderUniform*ArrayDynamicIndexing required.\n - While initializing adapter (backend=BackendType::Vulkan)\n    at InitializeImpl (PhysicalDeviceVk.cpp:253)\n`;
    const p = parseProbe(NO_ADAPTER, stderr);
    expect(p.devices).toEqual(['llvmpipe (LLVM 15.0.6, 256 bits)']);
    expect(p.problem).toBe('only a software Vulkan driver (llvmpipe (LLVM 15.0.6, 256 bits)) that WebGPU rejects (Vulkan shaderUniform*ArrayDynamicIndexing required)');
  });

  it('a rejected GPU is not called software', () => {
    const p = parseProbe(NO_ADAPTER, `${devices('AMD Radeon RX 580 (RADV POLARIS10)')}\nWarning: Vulkan 1.1 required.\n - While initializing adapter (backend=BackendType::Vulkan)\n`);
    expect(p.problem).toBe('Vulkan device(s) (AMD Radeon RX 580 (RADV POLARIS10)) that WebGPU rejects (Vulkan 1.1 required)');
  });

  it('no loader, and a loader without devices', () => {
    const noLoader = parseProbe(NO_ADAPTER, "Warning: Couldn't load Vulkan: libvulkan.so.1: cannot open shared object file: No such file or directory\n");
    expect(noLoader.problem).toBe('no Vulkan loader (libvulkan.so.1) found');
    expect(parseProbe(NO_ADAPTER, 'ERROR | DRIVER:   vkCreateInstance: Found no drivers!\n').problem).toBe('a Vulkan loader but no Vulkan device (no GPU driver for Vulkan)');
  });
});

describe('software drivers', () => {
  it('hideSoftwareDrivers keeps the user\'s own patterns', () => {
    expect(hideSoftwareDrivers(undefined)).toBe('*lvp*,*swiftshader*');
    expect(hideSoftwareDrivers('*nouveau*')).toBe('*nouveau*,*lvp*,*swiftshader*');
    expect(hideSoftwareDrivers('*lvp*')).toBe('*lvp*,*swiftshader*');
  });
  it('isSoftwareDevice', () => {
    expect(isSoftwareDevice('llvmpipe (LLVM 15.0.6, 256 bits)')).toBe(true);
    expect(isSoftwareDevice('SwiftShader Device (Subzero)')).toBe(true);
    expect(isSoftwareDevice('NVIDIA H200')).toBe(false);
  });
});
