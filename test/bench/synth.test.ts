import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateCheckpoint, isCached, LARGE_MIXTRAL_CONFIG, totalBytesBf16 } from '../../src/bench/synth.js';
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
