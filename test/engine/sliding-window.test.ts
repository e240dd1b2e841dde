/** Mixtral sliding-window attention against transformers (tiny-mixtral with sliding_window = 16, 64 tokens). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Decoder } from '../../src/engine/decoder.js';
import { createEngine } from '../../src/engine/engine.js';
import { causalMask } from '../../src/engine/forward.js';
import { maxAbsDiff, readReference, withConfig } from './helpers.js';
import { FIXTURES } from '../paths.js';

const SHARED = path.join(FIXTURES, 'tiny-mixtral');
const REF = path.resolve(__dirname, '../fixtures/generated-sliding/mixtral-sw16.safetensors');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-sw-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('sliding window', () => {
  it('mask: query q sees keys q−w+1 … q', () => {
    const m = causalMask(3, 2, 2); // queries at positions 2, 3, 4; keys 0..4
    const row = (i: number) => Array.from(m.subarray(i * 5, i * 5 + 5), (v) => (v === 0 ? 1 : 0));
    expect([row(0), row(1), row(2)]).toEqual([
      [0, 1, 1, 0, 0],
      [0, 0, 1, 1, 0],
      [0, 0, 0, 1, 1],
    ]);
  });

  it('forward and KV-cache decoding match transformers with sliding_window = 16', async () => {
    const dir = withConfig(SHARED, path.join(tmp, 'mixtral-sw16'), { sliding_window: 16 });
    const { ids, logits: want } = readReference(REF);
    const engine = await createEngine(dir, { device: 'cpu' });
    try {
      const V = engine.model.spec.vocabSize;
      const out = await engine.forward.run([ids], { head: 'logits' });
      expect(maxAbsDiff(out.logits!, want)).toBeLessThan(1e-3);
      const dec = new Decoder(engine.forward, 1);
      await dec.step([ids.subarray(0, 30)]);
      let derr = 0;
      for (let p = 30; p < 64; p++) {
        const l = await dec.step([ids.subarray(p, p + 1)]);
        derr = Math.max(derr, maxAbsDiff(l, want.subarray(p * V, (p + 1) * V)));
      }
      expect(derr).toBeLessThan(1e-3);
    } finally {
      await engine.close();
    }
  });
});
