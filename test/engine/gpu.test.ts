/**
 * The same graphs on a GPU execution provider, when one is present (CUDA needs the opt-in install; WebGPU needs a
 * Vulkan loader). On machines without a GPU — CI included — these tests skip.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { resolveDevice } from '../../src/graph/session.js';
import { maxAbsDiff, readReference } from './helpers.js';
import { FIXTURES } from '../paths.js';

const DIR = path.join(FIXTURES, 'tiny-qwen3-moe');
const available = async (d: 'cuda' | 'webgpu') => resolveDevice(d).then(() => true, () => false);
const devices = { cuda: await available('cuda'), webgpu: await available('webgpu') };

describe('GPU execution providers', () => {
  for (const device of ['cuda', 'webgpu'] as const) {
    it.skipIf(!devices[device])(`${device}: reproduces the reference logits`, async () => {
      const { ids, logits: want } = readReference(DIR);
      const engine = await createEngine(DIR, { device });
      try {
        expect(engine.device).toBe(device);
        const out = await engine.forward.run([ids], { head: 'logits' });
        expect(maxAbsDiff(out.logits!, want)).toBeLessThan(1e-3);
      } finally {
        await engine.close();
      }
    });
  }
});
