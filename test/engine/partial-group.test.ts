/**
 * GPTQ checkpoints whose linears have a shorter last group (K not a multiple of group_size, as DeepSeek-V2-Lite's
 * dense intermediate_size 10944 with the default 128): a scaled-down DeepSeek-V2-Lite layout (src/bench/synth.ts,
 * dense down_proj K = 320 → groups 128, 128, 64; expert and shared down_proj K = 160 → 128, 32) quantized with the
 * default options, written in the GPTQ layout loaders expect (⌈K/g⌉ rows of scales/qzeros, g_idx = k // g), and
 * evaluated on both kernels to the logits of the dequantized weights.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateCheckpoint, PARTIAL_GROUP_DEEPSEEK_V2_CONFIG, writeByteTokenizer } from '../../src/bench/synth.js';
import { calibrate } from '../../src/calibration/calibrate.js';
import { int32Of, toFloat32 } from '../../src/checkpoint/dtypes.js';
import { SafetensorsFile } from '../../src/checkpoint/safetensors.js';
import { createEngine } from '../../src/engine/engine.js';
import { partialGroupNote } from '../../src/formats/gptq/index.js';
import { quantizeModel } from '../../src/pipeline/quantize.js';
import { WIKI } from '../paths.js';
import { maxAbsDiff } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-partial-group-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const model = path.join(tmp, 'model');
const DENSE_DOWN = 'model.layers.0.mlp.down_proj';
const EXPERT_DOWN = 'model.layers.1.mlp.experts.2.down_proj';
let gptqDir = '';
let deqDir = '';

beforeAll(async () => {
  generateCheckpoint(model, PARTIAL_GROUP_DEEPSEEK_V2_CONFIG as unknown as Record<string, unknown>, 'hf', 0.05);
  writeByteTokenizer(model, PARTIAL_GROUP_DEEPSEEK_V2_CONFIG.vocab_size);
  const text = path.join(tmp, 'calib.txt');
  fs.writeFileSync(text, fs.readFileSync(WIKI, 'utf8').slice(0, 20000));
  const calib = await calibrate({ model, data: [text], out: path.join(tmp, 'calib'), samples: 8, seqLen: 64, device: 'cpu' });
  // Default options (AGQ, 4 bits, group size 128, asym); the same solve written packed and as float32 weights.
  gptqDir = (await quantizeModel({ model, calib: calib.out, out: path.join(tmp, 'gptq'), device: 'cpu' })).out;
  deqDir = (await quantizeModel({ model, calib: calib.out, out: path.join(tmp, 'deq'), format: 'dequantized', device: 'cpu' })).out;
}, 300_000);

describe('GPTQ checkpoint with a shorter last group', () => {
  it('⌈K/g⌉ rows of scales and qzeros, g_idx = k // 128, one group_size in quantization_config, the report names the last group', () => {
    const cfg = JSON.parse(fs.readFileSync(path.join(gptqDir, 'config.json'), 'utf8')) as { quantization_config: Record<string, unknown> };
    expect(cfg.quantization_config).toMatchObject({ quant_method: 'gptq', bits: 4, group_size: 128, desc_act: false });
    const st = SafetensorsFile.open(path.join(gptqDir, 'model.safetensors'));
    try {
      for (const [prefix, K, N] of [[DENSE_DOWN, 320, 128], [EXPERT_DOWN, 160, 128], ['model.layers.1.mlp.shared_experts.down_proj', 160, 128]] as const) {
        const G = Math.ceil(K / 128);
        expect(st.info(`${prefix}.qweight`).shape).toEqual([K / 8, N]);
        expect(st.info(`${prefix}.qzeros`).shape).toEqual([G, N / 8]);
        expect(st.info(`${prefix}.scales`).shape).toEqual([G, N]);
        expect(Array.from(int32Of(st.readBytes(`${prefix}.g_idx`)))).toEqual(Array.from({ length: K }, (_, k) => Math.floor(k / 128)));
        expect(toFloat32('F16', st.readBytes(`${prefix}.scales`)).every((s) => s > 0)).toBe(true);
      }
      expect(st.info('model.layers.0.mlp.gate_proj.scales').shape).toEqual([1, 320]); // K = 128: one full group
      expect(st.info('model.layers.0.self_attn.kv_b_proj.scales').shape).toEqual([1, 128]); // K = 64 < 128
    } finally {
      st.close();
    }
    const report = JSON.parse(fs.readFileSync(path.join(gptqDir, 'quant-report.json'), 'utf8')) as { modules: Array<{ module: string; group_size: number; last_group?: number }> };
    const byName = new Map(report.modules.map((m) => [m.module, m]));
    expect(byName.get(DENSE_DOWN)).toMatchObject({ group_size: 128, last_group: 64 });
    expect(byName.get(EXPERT_DOWN)).toMatchObject({ group_size: 128, last_group: 32 });
    expect(byName.get('model.layers.0.mlp.gate_proj')!.last_group).toBeUndefined();
    expect(fs.readFileSync(path.join(gptqDir, 'quant-report.md'), 'utf8')).toContain(`| \`${DENSE_DOWN}\` | agq | 4 | 128 (last 64) |`);
  });

  it('dequantized kernel: bit-identical logits to the dequantized checkpoint; MatMulNBits (partial last block): the same to float rounding', async () => {
    const ids = Int32Array.from({ length: 48 }, (_, i) => (i * 37 + 11) % 512);
    const logits = async (dir: string, int4Kernels: boolean, expectBlock: number | null) => {
      const engine = await createEngine(dir, { device: 'cpu', int4Kernels });
      try {
        if (dir === gptqDir) {
          expect(engine.model.packed.has(`${DENSE_DOWN}.weight`)).toBe(true);
          // the kernel under test is the one used for the partial modules
          expect(engine.weights.nbitsBlockSize(`${DENSE_DOWN}.weight`)).toBe(expectBlock);
          expect(engine.weights.nbitsBlockSize(`${EXPERT_DOWN}.weight`)).toBe(expectBlock);
        }
        return (await engine.forward.run([ids], { head: 'logits' })).logits!;
      } finally {
        await engine.close();
      }
    };
    const ref = await logits(deqDir, false, null);
    const deq = await logits(gptqDir, false, null);
    expect(Buffer.from(deq.buffer, deq.byteOffset, deq.byteLength).equals(Buffer.from(ref.buffer, ref.byteOffset, ref.byteLength))).toBe(true);
    const nbits = await logits(gptqDir, true, 128);
    const scale = Math.max(...Array.from(ref, Math.abs));
    const err = maxAbsDiff(nbits, ref);
    console.log(`partial last group: MatMulNBits max|Δlogit| = ${err.toExponential(2)} (max |logit| ${scale.toFixed(2)})`);
    expect(err).toBeLessThan(1e-4 * Math.max(1, scale));
  });
});

describe('partialGroupNote', () => {
  it("DeepSeek-V2-Lite's widths: the dense down_proj (K = 10944) has a last group of 64; 64 divides every K", () => {
    const mods = [
      ['model.layers.0.self_attn.q_proj', 2048],
      ['model.layers.0.self_attn.kv_b_proj', 512],
      ['model.layers.0.mlp.down_proj', 10944],
      ['model.layers.1.mlp.experts.0.down_proj', 1408],
    ].map(([prefix, K]) => ({ prefix: prefix as string, K: K as number }));
    expect(partialGroupNote(mods, 128)).toBe(
      "--group-size 128 does not divide K of 1 linear (e.g. model.layers.0.mlp.down_proj, K=10944): their last group is shorter (64 columns there), " +
        "valid GPTQ that transformers/GPTQModel load; vLLM's GPTQ kernels need a group size that divides K (--group-size 64 would)",
    );
    expect(partialGroupNote(mods, 64)).toBeNull();
    expect(partialGroupNote(mods, -1)).toBeNull();
    expect(partialGroupNote([{ prefix: 'a', K: 64 }], 128)).toBeNull(); // K < g: one group, nothing shorter
  });
});
