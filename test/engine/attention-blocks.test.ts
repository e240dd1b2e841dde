/**
 * Full forwards compute attention in query blocks (src/graph/blocks.ts queryBlocks) or, for MHA on CPU, with
 * onnxruntime's fused GroupQueryAttention kernel; KV-cache decoding uses neither. All must give the same logits —
 * with plain causal attention (MHA and MLA) and with a sliding window that makes blocks start past key 0.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Decoder } from '../../src/engine/decoder.js';
import { createEngine } from '../../src/engine/engine.js';
import { queryBlocks } from '../../src/graph/blocks.js';
import { maxAbsDiff, withConfig } from './helpers.js';
import { FIXTURES } from '../paths.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-blocks-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const S = 200;
const ids = Int32Array.from({ length: S }, (_, i) => (i * 7919 + 13) % 4000);

async function compare(dir: string, fused = false, fusedScoreBytes?: number): Promise<number> {
  const engine = await createEngine(dir, { device: 'cpu' });
  engine.forward.fusedAttention = fused;
  if (fusedScoreBytes !== undefined) engine.forward.fusedScoreBytes = fusedScoreBytes;
  try {
    const V = engine.model.spec.vocabSize;
    const full = (await engine.forward.run([ids], { head: 'logits' })).logits!;
    const dec = new Decoder(engine.forward, 1);
    const prefill = 120;
    let err = 0;
    const check = (logits: Float32Array, p: number) => {
      err = Math.max(err, maxAbsDiff(logits, full.subarray(p * V, (p + 1) * V)));
    };
    check(await dec.step([ids.subarray(0, prefill)]), prefill - 1);
    for (let p = prefill; p < S; p++) check(await dec.step([ids.subarray(p, p + 1)]), p);
    // The full forward ran fused, or in query blocks (graph specific to S = 200), as asked.
    const keys = [...engine.pool.byKey.keys()].filter((k) => k.startsWith('attn:') && k.includes(':false:false:'));
    expect(keys.every((k) => k.includes(fused && fusedScoreBytes === undefined ? ':fused:' : `:S${S}:`))).toBe(true);
    return err;
  } finally {
    await engine.close();
  }
}

describe('attention in query blocks', () => {
  it('covers every query once and each block sees exactly its visible keys', () => {
    expect(queryBlocks(64, null)).toEqual([{ q0: 0, q1: 64, k0: 0, k1: 64 }]);
    const b = queryBlocks(200, 40);
    expect(b.map((x) => [x.q0, x.q1])).toEqual([[0, 64], [64, 128], [128, 192], [192, 200]]);
    expect(b.map((x) => x.k0)).toEqual([0, 25, 89, 153]);
    expect(b.every((x) => x.k1 === x.q1)).toBe(true);
    expect(queryBlocks(2048, null)).toHaveLength(16);
  });

  it('MHA (GQA) and MLA full forwards match KV-cache decoding', async () => {
    expect(await compare(path.join(FIXTURES, 'tiny-mixtral'))).toBeLessThan(1e-4);
    expect(await compare(path.join(FIXTURES, 'tiny-mixtral'), true)).toBeLessThan(1e-4);
    expect(await compare(path.join(FIXTURES, 'tiny-qwen3-moe'), true)).toBeLessThan(1e-4);
    expect(await compare(path.join(FIXTURES, 'tiny-deepseek-v3'))).toBeLessThan(1e-4);
    expect(await compare(path.join(FIXTURES, 'tiny-deepseek-v3'), true)).toBeLessThan(1e-4);
  });

  it('the fused kernel gives way to query blocks when its [B, heads, S, S] scores would exceed fusedScoreBytes', async () => {
    expect(await compare(path.join(FIXTURES, 'tiny-mixtral'), true, 4 * S * S * 4 - 1)).toBeLessThan(1e-4);
  });

  it('sliding window (in blocks and fused) matches KV-cache decoding', async () => {
    const dir = withConfig(path.join(FIXTURES, 'tiny-mixtral'), path.join(tmp, 'mixtral-sw40'), { sliding_window: 40 });
    expect(await compare(dir)).toBeLessThan(1e-4);
    expect(await compare(dir, true)).toBeLessThan(1e-4);
  });
});
