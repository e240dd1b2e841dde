import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateCheckpoint, hfGenerationConfig, isCached, LARGE_MIXTRAL_CONFIG, plannedTensors, QWEN3_30B_A3B_LAYER, totalBytesBf16 } from '../../src/bench/synth.js';
import { openModel } from '../../src/engine/model.js';

const small = { ...LARGE_MIXTRAL_CONFIG, vocab_size: 64, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8 };
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-synth-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('bench synthetic checkpoint', () => {
  it('the large config is at least 4 GB in bf16', () => {
    expect(totalBytesBf16(LARGE_MIXTRAL_CONFIG)).toBeGreaterThanOrEqual(4e9);
  });

  it('writes a checkpoint openModel accepts, with finite normal-ish weights, and reuses it', () => {
    const g = generateCheckpoint(dir, small);
    expect(g.reused).toBe(false);
    expect(isCached(dir, small)).toBe(true);
    const m = openModel(dir);
    try {
      expect(m.checkpoint.totalBytes).toBe(totalBytesBf16(small));
      const w = m.checkpoint.readFloat32('model.layers.0.block_sparse_moe.experts.0.w1.weight');
      const std = Math.sqrt(w.reduce((s, x) => s + x * x, 0) / w.length);
      expect(std).toBeGreaterThan(0.015);
      expect(std).toBeLessThan(0.025);
      expect(Array.from(m.checkpoint.readFloat32('model.norm.weight')).every((x) => x === 1)).toBe(true);
    } finally {
      m.checkpoint.close();
    }
    expect(generateCheckpoint(dir, small).reused).toBe(true);
    expect(isCached(dir, { ...small, num_hidden_layers: 3 })).toBe(false);
  });
});

describe('real-shape layout (one Qwen3-30B-A3B layer) matches what transformers 5.18 wrote', () => {
  type Manifest = {
    config: Record<string, unknown>;
    generation_config: Record<string, unknown>;
    files: string[];
    index: boolean;
    tensors: Record<string, { file: string; dtype: string; shape: number[] }>;
  };
  // Written by scripts/bench/make_real_shapes.py --shape qwen3-30b-a3b --layers 1 --manifest … (save_pretrained).
  const manifest = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../fixtures/real-shapes/qwen3-30b-a3b-1layer.json'), 'utf8')) as Manifest;

  it('config.json and generation_config.json are the ones transformers wrote', () => {
    expect(QWEN3_30B_A3B_LAYER).toEqual(manifest.config);
    expect(Object.keys(QWEN3_30B_A3B_LAYER)).toEqual(Object.keys(manifest.config));
    expect(hfGenerationConfig(QWEN3_30B_A3B_LAYER)).toEqual(manifest.generation_config);
  });

  it('every tensor name and shape, in bf16, in one model.safetensors without an index', () => {
    const planned = plannedTensors(QWEN3_30B_A3B_LAYER);
    expect(new Map(planned.map((t) => [t.name, t.shape]))).toEqual(new Map(Object.entries(manifest.tensors).map(([n, t]) => [n, t.shape])));
    expect(new Set(Object.values(manifest.tensors).map((t) => `${t.dtype} ${t.file}`))).toEqual(new Set(['BF16 model.safetensors']));
    expect(manifest.index).toBe(false);
    expect(totalBytesBf16(QWEN3_30B_A3B_LAYER)).toBeLessThan(50e9); // transformers' default shard size: one file
  });

  it("layout 'hf' writes model.safetensors, config.json and generation_config.json (no index) that openModel accepts", () => {
    const tinyDir = path.join(dir, 'hf');
    const tiny = { ...QWEN3_30B_A3B_LAYER, hidden_size: 32, moe_intermediate_size: 8, num_local_experts: 16, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8, vocab_size: 64, eos_token_id: 63 };
    expect(generateCheckpoint(tinyDir, tiny, 'hf').reused).toBe(false);
    const files = fs.readdirSync(tinyDir).filter((f) => f !== 'bench-meta.json').sort();
    expect(files).toEqual(manifest.files);
    const m = openModel(tinyDir);
    try {
      expect(m.spec.layers[0]!.ffn.kind).toBe('moe');
      expect(m.checkpoint.info('model.layers.0.mlp.experts.15.down_proj.weight').shape).toEqual([32, 8]);
    } finally {
      m.checkpoint.close();
    }
    expect(isCached(tinyDir, tiny, 'hf')).toBe(true);
    expect(isCached(tinyDir, tiny, 'bench')).toBe(false);
  });
});
