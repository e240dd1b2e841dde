/** Incremental decoding (KV cache, MHA and MLA) must agree with the full-sequence forward pass. */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Decoder } from '../../src/engine/decoder.js';
import { createEngine } from '../../src/engine/engine.js';
import { readReference } from './helpers.js';
import { FIXTURES } from '../paths.js';


describe('Decoder', () => {
  for (const name of ['tiny-mixtral', 'tiny-deepseek-v3', 'tiny-qwen3-moe']) {
    it(`${name}: prefill + one-token steps reproduce the reference logits; reorder keeps beams apart`, async () => {
      const dir = path.join(FIXTURES, name);
      const { ids, logits: want } = readReference(dir);
      const engine = await createEngine(dir, { device: 'cpu' });
      try {
        const V = engine.model.spec.vocabSize;
        // Two beams: beam 0 = the reference text, beam 1 = a different prefix.
        const other = ids.map((t) => (t + 7) % V);
        const dec = new Decoder(engine.forward, 2);
        await dec.step([ids.subarray(0, 40), other.subarray(0, 40)]);
        let maxErr = 0;
        for (let p = 40; p < 64; p++) {
          const logits = await dec.step([ids.subarray(p, p + 1), other.subarray(p, p + 1)]);
          for (let v = 0; v < V; v++) maxErr = Math.max(maxErr, Math.abs(logits[v]! - want[p * V + v]!));
          if (p === 50) {
            dec.reorder([1, 0]); // swap the beams...
            dec.reorder([1, 0]); // ...and back: row 0 is the reference text again
          }
        }
        expect(maxErr).toBeLessThan(1e-3);
        // Duplicate beam 0 into both rows: both rows must now produce the reference continuation.
        const dec2 = new Decoder(engine.forward, 2);
        await dec2.step([ids.subarray(0, 63), other.subarray(0, 63)]);
        dec2.reorder([0, 0]);
        const l = await dec2.step([ids.subarray(63, 64), ids.subarray(63, 64)]);
        for (let v = 0; v < V; v += 97) {
          expect(Math.abs(l[v]! - want[63 * V + v]!)).toBeLessThan(1e-3);
          expect(Math.abs(l[V + v]! - want[63 * V + v]!)).toBeLessThan(1e-3);
        }
      } finally {
        await engine.close();
      }
    });
  }
});
