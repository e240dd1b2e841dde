/**
 * The problem users of real models hit first: DeepSeek-V2-Lite's dense intermediate_size 10944 is not a multiple of
 * the default group size 128. Scaled down (src/bench/synth.ts PARTIAL_GROUP_DEEPSEEK_V2_CONFIG: dense width 320,
 * experts 160), `moe-quant quantize` with default options — only --model and --out — runs end to end through the
 * built CLI: bundled calibration text, AGQ 4-bit g128 with shorter last groups, GPTQ output, and the comparison.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateCheckpoint, PARTIAL_GROUP_DEEPSEEK_V2_CONFIG, writeByteTokenizer } from '../../src/bench/synth.js';
import { cli } from './spawn.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-cli-partial-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('quantize with default options on a model whose MLP widths are not multiples of 128', () => {
  it('writes a GPTQ checkpoint with shorter last groups and compares it with the original', () => {
    const model = path.join(tmp, 'deepseek-v2-lite-scaled');
    generateCheckpoint(model, PARTIAL_GROUP_DEEPSEEK_V2_CONFIG as unknown as Record<string, unknown>, 'hf', 0.05);
    writeByteTokenizer(model, PARTIAL_GROUP_DEEPSEEK_V2_CONFIG.vocab_size);
    const out = path.join(tmp, 'q');
    const r = cli(['quantize', '--model', model, '--out', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(
      "--group-size 128 does not divide K of 6 linears (e.g. model.layers.0.mlp.down_proj, K=320): their last group is shorter (64 columns there), " +
        "valid GPTQ that transformers/GPTQModel load; vLLM's GPTQ kernels need a group size that divides K (--group-size 32 would)",
    );
    const j = JSON.parse(r.stdout) as { method: string; bits: number; ppl_fp: number; ppl_quantized: number; kl_mean: number };
    expect(j).toMatchObject({ method: 'agq', bits: 4 });
    expect(Number.isFinite(j.ppl_quantized) && j.ppl_quantized > 1).toBe(true);
    expect(j.ppl_quantized / j.ppl_fp).toBeLessThan(1.05);
    expect(j.kl_mean).toBeLessThan(0.05);
    const qr = JSON.parse(fs.readFileSync(path.join(out, 'quant-report.json'), 'utf8')) as { group_size: number; modules: Array<{ module: string; last_group?: number }> };
    expect(qr.group_size).toBe(128);
    const partial = qr.modules.filter((m) => m.last_group !== undefined).map((m) => `${m.module}:${m.last_group}`);
    expect(partial).toEqual([
      'model.layers.0.mlp.down_proj:64',
      ...[0, 1, 2, 3].map((e) => `model.layers.1.mlp.experts.${e}.down_proj:32`),
      'model.layers.1.mlp.shared_experts.down_proj:32',
    ]);
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')) as { quantization_config: { group_size: number } };
    expect(cfg.quantization_config.group_size).toBe(128);
  }, 300_000);
});
