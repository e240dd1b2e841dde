/**
 * Device choice with software Vulkan drivers visible, through the built CLI as a user runs it: Mesa 25 lavapipe
 * (WebGPU accepts it) and Debian 12's Mesa 22.3 lavapipe (WebGPU rejects it), both from scripts/software-vulkan.sh.
 * `--device auto` must never take a software adapter and must probe quietly; errors say what was found.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EXPECT_WEBGPU, readSoftwareVulkan, SOFTWARE_VULKAN_DIR, vulkanEnv } from './software-vulkan.js';

const BIN = path.resolve(__dirname, '../../bin/moe-quant');
const vk = readSoftwareVulkan();
const run = vk !== null || EXPECT_WEBGPU;
if (!run) console.warn(`device-probe tests skipped: no software Vulkan in ${SOFTWARE_VULKAN_DIR} (scripts/software-vulkan.sh installs it)`);

function cli(which: 'accepted' | 'rejected', ...args: string[]) {
  const env = which === 'accepted' ? vulkanEnv(vk!) : vulkanEnv(vk!.rejected);
  const r = spawnSync(process.execPath, [BIN, ...args], { env, encoding: 'utf8' });
  // Progress bars aside, what the user sees on stderr.
  const lines = r.stderr.split('\n').filter((l) => l.trim() && !/^eval: /.test(l));
  return { code: r.status, stdout: r.stdout, lines };
}
const short = ['--seq-len', '32', '--max-windows', '2'];

describe.skipIf(!run)('device probing with software Vulkan drivers', () => {
  it('the software Vulkan is installed', () => {
    expect(vk, `no ${SOFTWARE_VULKAN_DIR}/env.json`).not.toBeNull();
  });

  it('Mesa 25 lavapipe: auto stays on the CPU, says why, and prints nothing else', () => {
    const r = cli('accepted', 'eval', ...short);
    expect(r.code).toBe(0);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/^device: cpu \(auto; cuda unavailable, webgpu: only a software Vulkan driver \(lvp_icd[^)]*\)/);
  });

  it('Mesa 25 lavapipe: auto with --workers 2 runs parallel CPU workers', () => {
    const r = cli('accepted', 'eval', '--workers', '2', '--seq-len', '32', '--max-windows', '4');
    expect(r.code, r.lines.join('\n')).toBe(0);
    expect(r.lines[0]).toMatch(/^device: cpu \(auto;.*2 parallel workers/);
  });

  it('Mesa 25 lavapipe: an explicit --device webgpu runs on it and says it is a software adapter', () => {
    const r = cli('accepted', 'eval', '--device', 'webgpu', '--json', ...short);
    expect(r.code, r.lines.join('\n')).toBe(0);
    expect(r.lines[0]).toMatch(/^device: webgpu \(software adapter llvmpipe .*slower than --device cpu\)$/);
    expect((JSON.parse(r.stdout) as { device: string }).device).toBe('webgpu');
  });

  it("Debian 12's lavapipe: auto probes quietly (no native warnings) and stays on the CPU", () => {
    const r = cli('rejected', 'eval', ...short);
    expect(r.code).toBe(0);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/^device: cpu \(auto; cuda unavailable, webgpu: only a software Vulkan driver/);
  });

  it("Debian 12's lavapipe: --device webgpu fails in one line that says what was found", () => {
    const r = cli('rejected', 'eval', '--device', 'webgpu', ...short);
    expect(r.code).toBe(2);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(
      /^moe-quant: error: --device webgpu is not available: only a software Vulkan driver \(llvmpipe [^)]*\)\) that WebGPU rejects \(Vulkan shader.*ArrayDynamicIndexing required\); /,
    );
  });

  it('doctor: --device webgpu reports the software adapter and a perplexity equal to the CPU one; auto reports the CPU', () => {
    const web = cli('accepted', 'doctor', '--device', 'webgpu', '--json', '--seq-len', '64');
    expect(web.code, web.lines.join('\n')).toBe(0);
    const r = JSON.parse(web.stdout) as { device: string; software: boolean; adapter: string; rel_diff: number; ok: boolean };
    expect(r).toMatchObject({ device: 'webgpu', software: true, ok: true });
    expect(r.adapter).toMatch(/^llvmpipe/);
    expect(r.rel_diff).toBeLessThanOrEqual(1e-6);
    const auto = cli('accepted', 'doctor', '--json', '--seq-len', '64');
    expect(auto.code).toBe(0);
    expect(JSON.parse(auto.stdout)).toMatchObject({ requested: 'auto', device: 'cpu', rel_diff: null, ok: true });
  });
});
