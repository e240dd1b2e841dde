/** ffnInputsOnly (quantize's router and gate/up capture passes): same FFN input and routing, no FFN run, x untouched. */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import type { ActivationsEvent } from '../../src/engine/forward.js';
import { tensor } from '../../src/graph/session.js';
import { FIXTURES } from '../paths.js';
import { readReference } from './helpers.js';

describe('ffnStep with ffnInputsOnly', () => {
  for (const name of ['tiny-deepseek-v3', 'tiny-qwen3-moe']) {
    it(name, async () => {
      const dir = path.join(FIXTURES, name);
      const { ids } = readReference(dir);
      const engine = await createEngine(dir, { device: 'cpu' });
      try {
        const f = engine.forward;
        const S = 32;
        const x = f.embed([ids.subarray(0, S)]);
        const ctx = { ...f.sequenceContext(S), bs: tensor.i64From([1, S]), batchIndex: 0, tokenOffset: 0 };
        for (const layer of engine.model.spec.layers.slice(0, 2)) {
          const a = await f.attentionStep(layer, x, ctx);
          const seen: ActivationsEvent[] = [];
          const hooks = { capture: true, onActivations: (ev: ActivationsEvent) => void seen.push(ev) };
          const before = x.slice();
          await f.ffnStep(layer, x, a, { ...ctx, ffnInputsOnly: true, hooks });
          expect(Buffer.from(x.buffer).equals(Buffer.from(before.buffer))).toBe(true);
          const full = x.slice();
          await f.ffnStep(layer, full, a, { ...ctx, hooks });
          expect(Buffer.from(full.buffer).equals(Buffer.from(before.buffer))).toBe(false);
          const [only, all] = seen as [ActivationsEvent, ActivationsEvent];
          expect(only.inputs['ffn']).toEqual(all.inputs['ffn']);
          expect(only.rows?.map((r) => Array.from(r))).toEqual(all.rows?.map((r) => Array.from(r)));
          expect(only.rowWeights?.map((r) => Array.from(r))).toEqual(all.rowWeights?.map((r) => Array.from(r)));
          x.set(full); // next layer from the real output
        }
      } finally {
        await engine.close();
      }
    });
  }
});
