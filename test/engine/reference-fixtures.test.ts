/**
 * Ground truth: logits and per-layer top-k expert ids computed by Hugging Face transformers' own modeling classes.
 * Trained fixtures live in ../shared/fixtures; generated ones (families without a trained fixture) in test/fixtures/generated.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/checkpoint/safetensors.js';
import { createEngine } from '../../src/engine/engine.js';
import { moeLayers } from '../../src/architectures/types.js';
import { maxAbsDiff, readReference } from './helpers.js';
import { FIXTURES } from '../paths.js';

const GENERATED = path.resolve(__dirname, '../fixtures/generated');

function fixtureDirs(): string[] {
  const dirs: string[] = [];
  for (const root of [FIXTURES, GENERATED]) {
    if (!fs.existsSync(root)) continue;
    for (const d of fs.readdirSync(root).sort()) {
      const full = path.join(root, d);
      if (fs.existsSync(path.join(full, 'reference.safetensors')) && fs.existsSync(path.join(full, 'config.json'))) dirs.push(full);
    }
  }
  return dirs;
}

describe('forward pass reproduces Hugging Face references', () => {
  const dirs = fixtureDirs();
  it('finds the shared fixtures', () => {
    expect(dirs.filter((d) => d.startsWith(FIXTURES)).length).toBe(3);
  });
  for (const dir of dirs) {
    it(`${path.basename(dir)}: logits within 1e-3 and identical top-k experts`, async () => {
      const ref = SafetensorsFile.open(path.join(dir, 'reference.safetensors'));
      const ids = Int32Array.from(ref.readFloat32('input_ids'));
      const refLogits = ref.readFloat32('logits');
      const engine = await createEngine(dir, { device: 'cpu' });
      try {
        const spec = engine.model.spec;
        const picked = new Map<number, Int32Array>();
        const out = await engine.forward.run([ids], {
          head: 'logits',
          hooks: { onRouting: (ev) => picked.set(ev.layerIndex, ev.routing.experts) },
        });
        const maxErr = maxAbsDiff(out.logits!, refLogits);
        console.log(`${path.basename(dir)} max|Δlogit| = ${maxErr.toExponential(2)}`);
        expect(maxErr).toBeLessThan(1e-3);
        for (const layer of moeLayers(spec)) {
          const k = layer.ffn.routing.numExpertsUsed;
          const want = ref.readFloat32(`layers.${layer.index}.topk_indices`);
          const got = picked.get(layer.index)!;
          for (let t = 0; t < ids.length; t++) {
            const g = Array.from(got.subarray(t * k, (t + 1) * k)).sort((a, b) => a - b);
            const w = Array.from(want.subarray(t * k, (t + 1) * k));
            expect(g, `layer ${layer.index} token ${t}`).toEqual(w);
          }
        }
      } finally {
        await engine.close();
        ref.close();
      }
    });
  }
});

describe('streaming mode (weights read per layer, experts in chunks) gives the same results', () => {
  for (const dir of fixtureDirs().filter((d) => /deepseek-v3|qwen2-moe|mixtral/.test(d))) {
    it(path.basename(dir), async () => {
      const { ids, logits: want } = readReference(dir);
      const engine = await createEngine(dir, { device: 'cpu', cacheBytes: 0 });
      try {
        expect(engine.weights.resident).toBe(false);
        const f = moeLayers(engine.model.spec)[0]!.ffn;
        engine.forward.expertChunkBytes = 3 * 3 * engine.model.spec.hiddenSize * f.expertIntermediateSize * 4; // 3 experts
        engine.forward.headBytes = 5 * engine.model.spec.vocabSize * 4 * 2; // head in chunks of 5 rows
        expect(engine.forward.expertChunks(f).length).toBeGreaterThan(1);
        // the same 32-token prefix twice, in separate batches: weights are reused across batches and chunks, and
        // both copies must match the reference's first 32 positions
        const head = ids.subarray(0, 32);
        const out = await engine.forward.run([head, head], { head: 'logits', batchTokens: 32 });
        const n = 32 * engine.model.spec.vocabSize;
        for (const half of [0, 1]) expect(maxAbsDiff(out.logits!.subarray(half * n, (half + 1) * n), want.subarray(0, n))).toBeLessThan(1e-3);
      } finally {
        await engine.close();
      }
    });
  }
});

describe('output head in row chunks', () => {
  it('per-token NLL is the same whether the head runs in one piece or in chunks of 7 rows', async () => {
    const dir = path.join(FIXTURES, 'tiny-qwen3-moe');
    const { ids } = readReference(dir);
    const engine = await createEngine(dir, { device: 'cpu' });
    try {
      const seqs = [ids.subarray(0, 32), ids.subarray(32, 64)];
      const whole = (await engine.forward.run(seqs, { head: 'nll' })).nll!;
      engine.forward.headBytes = 7 * engine.model.spec.vocabSize * 4 * 2;
      const chunked = (await engine.forward.run(seqs, { head: 'nll' })).nll!;
      expect(Array.from(chunked)).toEqual(Array.from(whole));
      expect(Number.isNaN(chunked[31])).toBe(true);
      expect(Number.isFinite(chunked[30]!)).toBe(true);
    } finally {
      await engine.close();
    }
  });
});
